"""Batched forward passes of one image set, restarted from a cached residual stream.

A disentanglement sweep runs the same images through the model many times, each time with another
intervention at some layer L. Everything before block L is the same every time, so the residual
stream entering block L is computed once per layer and each intervention runs only blocks L.. (the
HookedViT `start_at_layer` argument). Hooks before the cached layer force a restart from pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from sae_clip_plugin.model.device import model_device
from sae_clip_plugin.model.hooks import first_layer, hook_layer  # noqa: F401 (hook_layer: re-exported)

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

Hook = tuple[str, Any]


class ImageForwarder:
    """Image embeddings of a fixed pixel tensor under any list of hooks, reusing the clean prefix.

    Keeps the residual stream entering one block (the most recently used) in memory: pixels
    [N, 3, S, S] -> resid [N, n_tokens, d_model] costs N * n_tokens * d_model floats.
    """

    def __init__(self, model: HookedViT, pixels: torch.Tensor, batch_size: int = 128) -> None:
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be [N, 3, S, S], got shape {tuple(pixels.shape)}")
        self.model = model
        self.pixels = pixels
        self.batch_size = int(batch_size)
        self.device = model_device(model)
        self._cached_layer: int | None = None
        self._cached: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @torch.no_grad()
    def resid_pre(self, layer: int) -> torch.Tensor:
        """The clean residual stream entering block `layer` for every image (kept for reuse)."""
        if self._cached_layer != layer:
            self._cached = None  # free the old one first
            parts = []
            for start in range(0, len(self), self.batch_size):
                x = self.pixels[start : start + self.batch_size].to(self.device)
                parts.append(self.model(x, stop_at_layer=layer))
            self._cached, self._cached_layer = torch.cat(parts), layer
        assert self._cached is not None
        return self._cached

    @torch.no_grad()
    def embeds(self, hooks: Sequence[Hook] = ()) -> torch.Tensor:
        """Image embeddings [N, d_embed] (float32, CPU) with `hooks` active."""
        n_layers = self.model.cfg.n_layers
        start = first_layer([name for name, _ in hooks], n_layers)
        out = []
        with self.model.hooks(fwd_hooks=list(hooks)):
            if start == 0:
                for i in range(0, len(self), self.batch_size):
                    out.append(self.model(self.pixels[i : i + self.batch_size].to(self.device)))
            else:
                resid = self.resid_pre(start)
                for i in range(0, len(self), self.batch_size):
                    out.append(self.model(resid[i : i + self.batch_size], start_at_layer=start))
        return torch.cat(out).float().cpu()
