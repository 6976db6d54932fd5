"""Images -> per-image activations at several hooks from one forward pass.

`run_with_cache(names_filter=hooks, stop_at_layer=last + 1)` computes nothing past the deepest hook;
the token selection is applied right away so only the rows an SAE trains on are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from sae_clip_plugin.training.sources import ImageSource, TensorSource, image_loader
from sae_clip_plugin.training.tokens import HookGeometry, hook_geometry, stop_at_layer_for

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


class ActivationHarvester:
    """Runs a HookedViT over an image source and yields {hook: [images, context_size, d_in]} per batch.

    `out_device`/`out_dtype` say where activations land (CPU float32 by default, so they can be
    cached or mixed while the model keeps the accelerator).
    """

    def __init__(
        self,
        model: HookedViT,
        hook_names: Sequence[str],
        token_selection: str = "all",
        batch_size: int = 64,
        num_workers: int = 0,
        out_device: str | torch.device = "cpu",
        out_dtype: torch.dtype = torch.float32,
        autocast: bool = False,
    ) -> None:
        self.model = model
        self.hook_names = list(dict.fromkeys(hook_names))
        self.token_selection = token_selection
        self.geometry: dict[str, HookGeometry] = hook_geometry(model, self.hook_names, token_selection)
        self.stop_at_layer = stop_at_layer_for(self.hook_names)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.out_device = torch.device(out_device)
        self.out_dtype = out_dtype
        self.autocast = autocast
        param = next(model.parameters())
        self.device, self.model_dtype = param.device, param.dtype

    @property
    def context_size(self) -> int:
        return next(iter(self.geometry.values())).context_size

    @property
    def d_in(self) -> dict[str, int]:
        return {name: g.d_in for name, g in self.geometry.items()}

    @torch.no_grad()
    def activations(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch of pixel tensors -> {hook: [batch, context_size, d_in]}."""
        pixels = pixels.to(self.device, self.model_dtype, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            _, cache = self.model.run_with_cache(
                pixels,
                names_filter=self.hook_names,
                stop_at_layer=self.stop_at_layer,
                return_cache_object=False,
            )
        return {
            name: geom.select(cache[name]).to(self.out_device, self.out_dtype)
            for name, geom in self.geometry.items()
        }

    def iter_batches(
        self, source: ImageSource, indices: Sequence[int] | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Activations for `indices` of `source` (all images by default), in that order."""
        indices = range(len(source)) if indices is None else indices
        was_training = self.model.training
        self.model.eval()
        try:
            indices = list(indices)
            if isinstance(source, TensorSource) and source.images.is_floating_point():
                # preprocessed pixels: batch by indexing, no per-image DataLoader round trip
                order = torch.as_tensor(indices, dtype=torch.long)
                batches = (
                    source.images[order[start : start + self.batch_size]]
                    for start in range(0, len(order), self.batch_size)
                )
            else:
                batches = image_loader(source, indices, self.batch_size, self.num_workers)
            try:
                for start, pixels in zip(range(0, len(indices), self.batch_size), batches, strict=False):
                    acts = self.activations(pixels)
                    _check_finite(acts, source, indices[start : start + self.batch_size])
                    yield acts
            except Exception as err:
                raise _without_worker_traceback(err) from None
        finally:
            self.model.train(was_training)


def _without_worker_traceback(err: Exception) -> Exception:
    """A DataLoader worker's error as its own one-line message (torch adds the worker's whole traceback to it).

    Why: a bad image met by one of the default 2 workers printed a 51-line traceback around the one line
    that names the file.
    """
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = next((line for line in reversed(text.splitlines()) if line.strip()), text)
    message = last.split(": ", 1)[1] if ": " in last else last
    try:
        return type(err)(f"{message} (in a data-loading worker)")
    except Exception:
        return RuntimeError(f"{message} (in a data-loading worker)")


class NonFiniteActivationsError(ValueError):
    """An image gives NaN/inf activations (NaN or inf pixels, or an overflow in a low-precision model)."""


def _check_finite(acts: dict[str, torch.Tensor], source: ImageSource, indices: Sequence[int]) -> None:
    """Name the first image whose activations are not finite, before they reach a cache or an SAE."""
    for name, a in acts.items():
        bad = ~torch.isfinite(a.flatten(1)).all(1)
        if bad.any():
            i = indices[int(bad.nonzero()[0])]
            raise NonFiniteActivationsError(
                f"image {source.image_id(i)!r} (index {i}) gives non-finite activations at {name}: check it for "
                "NaN/inf pixels or remove it from the dataset (model_dtype float32 avoids overflow)"
            )
