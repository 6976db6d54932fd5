"""Training batches for sae_lens' trainers: image activations -> tokens -> sae_lens' mixing buffer.

The provider is an iterator: one hook gives tensors [train_batch_size, d_in] (what `SAETrainer`
wants), several hooks give {hook: tensor} with tokens aligned across hooks (what `MultiSAETrainer`
wants, via sae_lens' `multi_hook_concat_split_iter`). Images come from a live harvester or a disk
cache, epoch after epoch; the position in the image stream is resumable (`state_dict`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from sae_lens.training.mixing_buffer import mixing_buffer, multi_hook_concat_split_iter

from sae_clip_plugin.training.cache import ActivationDiskCache
from sae_clip_plugin.training.harvest import ActivationHarvester
from sae_clip_plugin.training.sources import ImageSource

ImageBatches = Callable[[Sequence[int]], Iterator[dict[str, torch.Tensor]]]


class EpochOrder:
    """Unit indices epoch after epoch (a fresh seeded permutation each epoch when shuffling).

    `epoch` and `position` always name the next unit to hand out, so a stream rebuilt from
    `state_dict()` continues where this one stopped.
    """

    def __init__(self, n_units: int, shuffle: bool = True, seed: int = 0) -> None:
        if n_units < 1:
            raise ValueError("nothing to iterate over: the image stream is empty")
        self.n_units, self.shuffle, self.seed = n_units, shuffle, seed
        self.epoch, self.position = 0, 0

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n_units))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_units, generator=generator).tolist()

    def remaining(self) -> list[int]:
        return self.order(self.epoch)[self.position :]

    def advance(self, n: int) -> None:
        self.position += n
        if self.position >= self.n_units:
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_units": self.n_units,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_units"] != self.n_units:
            raise ValueError(
                f"the saved data position is for {state['n_units']} images/chunks, this stream has {self.n_units}; "
                "resume with the same dataset (and cache settings) as the checkpointed run"
            )
        self.shuffle, self.seed = state["shuffle"], state["seed"]
        self.epoch, self.position = state["epoch"], state["position"]


class ActivationProvider(Iterator[Any]):
    """Batches of exactly `train_batch_size_tokens` rows, mixed by sae_lens' `mixing_buffer`.

    `mix_fraction=0` with `shuffle=False` passes tokens through in image order (for exactness checks).
    """

    def __init__(
        self,
        hook_names: Sequence[str],
        n_units: int,
        images_per_unit: Callable[[int], int],
        image_batches: ImageBatches,
        train_batch_size_tokens: int,
        buffer_tokens: int | None = None,
        mix_fraction: float = 0.5,
        shuffle: bool = True,
        seed: int = 0,
        out_device: str | torch.device = "cpu",
    ) -> None:
        self.hook_names = list(hook_names)
        self.train_batch_size_tokens = train_batch_size_tokens
        self.buffer_tokens = buffer_tokens or 16 * train_batch_size_tokens
        if self.buffer_tokens < train_batch_size_tokens:
            raise ValueError(
                f"buffer_tokens ({self.buffer_tokens}) must be >= train_batch_size_tokens ({train_batch_size_tokens})"
            )
        self.mix_fraction = mix_fraction
        self.order = EpochOrder(n_units, shuffle=shuffle, seed=seed)
        self._images_per_unit = images_per_unit
        self._image_batches = image_batches
        self.out_device = torch.device(out_device)
        self.n_images_read = 0
        self._batches: Iterator[Any] | None = None

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_harvester(
        cls, harvester: ActivationHarvester, source: ImageSource, train_batch_size_tokens: int, **kwargs: Any
    ) -> ActivationProvider:
        """Live activations: images are decoded, preprocessed and run through the model as needed."""
        source.set_transform(source.transform or harvester.model.preprocess)
        return cls(
            harvester.hook_names,
            len(source),
            lambda _: 1,
            lambda units: harvester.iter_batches(source, units),
            train_batch_size_tokens,
            **kwargs,
        )

    @classmethod
    def from_cache(
        cls,
        cache: ActivationDiskCache,
        train_batch_size_tokens: int,
        hook_names: Sequence[str] | None = None,
        chunk_images: int = 64,
        **kwargs: Any,
    ) -> ActivationProvider:
        """Cached activations, read in contiguous chunks of `chunk_images` images (shuffled chunk order)."""
        hook_names = list(hook_names or cache.hook_names)
        for name in hook_names:
            cache.d_in(name)  # raises a clear KeyError for a hook the cache lacks
        n = cache.n_images
        n_chunks = -(-n // chunk_images)

        def image_batches(units: Sequence[int]) -> Iterator[dict[str, torch.Tensor]]:
            for chunk in units:
                yield cache.read_images(chunk * chunk_images, min(n, (chunk + 1) * chunk_images), hook_names)

        def images_per_unit(chunk: int) -> int:
            return min(n, (chunk + 1) * chunk_images) - chunk * chunk_images

        return cls(hook_names, n_chunks, images_per_unit, image_batches, train_batch_size_tokens, **kwargs)

    # -- streams ----------------------------------------------------------------------------------
    def image_activations(self) -> Iterator[dict[str, torch.Tensor]]:
        """{hook: [images, context_size, d_in]} forever, advancing the resumable position."""
        while True:
            units = self.order.remaining()
            consumed = 0  # units of this pass already handed out
            for batch in self._image_batches(units):
                n_images = next(iter(batch.values())).shape[0]
                self.n_images_read += n_images
                # a batch may span several units (images) or be one unit (a cache chunk)
                n_units = 0
                while n_images > 0 and consumed + n_units < len(units):
                    n_images -= self._images_per_unit(units[consumed + n_units])
                    n_units += 1
                consumed += n_units
                self.order.advance(n_units)
                yield batch

    def token_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.image_activations():
            yield {name: acts.reshape(-1, acts.shape[-1]).to(self.out_device) for name, acts in batch.items()}

    def coalesced_token_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Token batches joined into pieces of one mixing-buffer refill.

        sae_lens' mixing_buffer concatenates its whole storage with every piece it receives, so
        feeding it one image batch at a time copies the buffer once per image batch; one piece per
        refill makes that a single copy. The tokens and their order are unchanged.
        """
        target = max(self.train_batch_size_tokens, int(self.buffer_tokens * (1 - self.mix_fraction)))
        pending: list[dict[str, torch.Tensor]] = []
        count = 0
        for batch in self.token_batches():
            pending.append(batch)
            count += next(iter(batch.values())).shape[0]
            if count >= target:
                yield (
                    pending[0]
                    if len(pending) == 1
                    else {name: torch.cat([b[name] for b in pending]) for name in self.hook_names}
                )
                pending, count = [], 0

    def _build(self) -> Iterator[Any]:
        pieces = self.coalesced_token_batches()
        if len(self.hook_names) == 1:
            (name,) = self.hook_names
            tokens = (piece[name] for piece in pieces)
            return mixing_buffer(self.buffer_tokens, self.train_batch_size_tokens, tokens, self.mix_fraction)
        return multi_hook_concat_split_iter(
            self.buffer_tokens, self.train_batch_size_tokens, pieces, self.hook_names, self.mix_fraction
        )

    def __iter__(self) -> ActivationProvider:
        return self

    def __next__(self) -> Any:
        if self._batches is None:
            self._batches = self._build()
        return next(self._batches)

    def state_dict(self) -> dict[str, Any]:
        return {**self.order.state_dict(), "n_images_read": self.n_images_read}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position (tokens still in the mixing buffer at save time are skipped)."""
        if self._batches is not None:
            raise RuntimeError("load the data position before drawing the first batch")
        self.order.load_state_dict(state)
        self.n_images_read = state.get("n_images_read", 0)
