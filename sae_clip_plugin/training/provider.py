"""Training batches for sae_lens' trainers: image activations -> tokens -> sae_lens' mixing buffer.

The provider is an iterator: one hook gives tensors [train_batch_size, d_in] (what `SAETrainer`
wants), several hooks give {hook: tensor} with tokens aligned across hooks (what `MultiSAETrainer`
wants, via sae_lens' `multi_hook_concat_split_iter`). Images come from a live harvester or a disk
cache, epoch after epoch; the position in the image stream is resumable (`state_dict`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sae_clip_plugin.training.cache import ActivationDiskCache
from sae_clip_plugin.training.harvest import ActivationHarvester
from sae_clip_plugin.training.mixing import MixingBuffer, MixingState, pack, unpack
from sae_clip_plugin.training.sources import ImageSource

# (units, their image order: unit -> positions inside it) -> activation batches
ImageBatches = Callable[[Sequence[int], Callable[[int], list[int]]], Iterator[dict[str, torch.Tensor]]]


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
        self.partial = 0  # images of unit `position` already handed out (a live batch can end inside a chunk)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n_units))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_units, generator=generator).tolist()

    def within(self, unit: int, size: int, epoch: int) -> list[int]:
        """The order of the `size` images inside `unit` in `epoch` (shuffled too, so small sets still mix)."""
        if not self.shuffle:
            return list(range(size))
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_033 + unit + 1)
        return torch.randperm(size, generator=generator).tolist()

    def remaining(self) -> list[int]:
        return self.order(self.epoch)[self.position :]

    def advance(self, n: int) -> None:
        self.position += n
        self.partial = 0
        if self.position >= self.n_units:
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_units": self.n_units,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "partial": self.partial,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "stream" in state:  # stream_provider.StreamCursor's
            raise ValueError(
                "this checkpoint's data position is in a stream (WebDataset shards or hf: --streaming), not an image "
                "list; resume with the --images of the checkpointed run"
            )
        if state["n_units"] != self.n_units:
            raise ValueError(
                f"the saved data position is for {state['n_units']} images/chunks, this stream has {self.n_units}; "
                "resume with the same dataset (and cache settings) as the checkpointed run"
            )
        self.shuffle, self.seed = state["shuffle"], state["seed"]
        self.epoch, self.position = state["epoch"], state["position"]
        self.partial = state.get("partial", 0)  # checkpoints of earlier releases: whole units only


def _chunk_range(chunk: int, chunk_images: int, n_images: int) -> range:
    """The images of chunk `chunk`: consecutive, `chunk_images` of them (the last chunk may be shorter)."""
    return range(chunk * chunk_images, min(n_images, (chunk + 1) * chunk_images))


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
        keep_snapshots: int = 16,
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
        self._batches: Iterator[torch.Tensor] | None = None
        # the exact-resume state: tokens read but not yet in the buffer, the buffer, and recent snapshots
        self._pending: list[dict[str, torch.Tensor]] = []
        self._hook_widths: list[int] | None = None
        self.mixer = MixingBuffer(self.buffer_tokens, train_batch_size_tokens, mix_fraction, seed=seed)
        self.batches_served = 0
        self._snapshots: deque[_Snapshot] = deque(maxlen=keep_snapshots)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_harvester(
        cls,
        harvester: ActivationHarvester,
        source: ImageSource,
        train_batch_size_tokens: int,
        chunk_images: int = 64,
        **kwargs: Any,
    ) -> ActivationProvider:
        """Live activations: images are decoded, preprocessed and run through the model as needed.

        Images are visited in the same shuffled chunks of `chunk_images` as `from_cache` reads them, so a run
        sees the same token stream with or without a disk cache (the cache is transparent).
        """
        source.set_transform(source.transform or harvester.model.preprocess)
        n = len(source)
        if n < 1:
            raise ValueError("nothing to iterate over: the image stream is empty")

        def image_batches(
            units: Sequence[int], inside: Callable[[int], list[int]]
        ) -> Iterator[dict[str, torch.Tensor]]:
            images = [_chunk_range(chunk, chunk_images, n)[i] for chunk in units for i in inside(chunk)]
            return harvester.iter_batches(source, images)

        return cls(
            harvester.hook_names,
            -(-n // chunk_images),
            lambda chunk: len(_chunk_range(chunk, chunk_images, n)),
            image_batches,
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

        def image_batches(
            units: Sequence[int], inside: Callable[[int], list[int]]
        ) -> Iterator[dict[str, torch.Tensor]]:
            for chunk in units:
                images = _chunk_range(chunk, chunk_images, n)
                acts = cache.read_images(images.start, images.stop, hook_names)  # contiguous: one read
                order = torch.as_tensor(inside(chunk), dtype=torch.long)
                yield {name: a[order] for name, a in acts.items()}

        return cls(
            hook_names,
            n_chunks,
            lambda chunk: len(_chunk_range(chunk, chunk_images, n)),
            image_batches,
            train_batch_size_tokens,
            **kwargs,
        )

    # -- streams ----------------------------------------------------------------------------------
    def image_activations(self) -> Iterator[dict[str, torch.Tensor]]:
        """{hook: [images, context_size, d_in]} forever, advancing the resumable position."""
        while True:
            units, epoch, skip = self.order.remaining(), self.order.epoch, self.order.partial
            # units of this pass fully handed out; images of the next one handed out (a resumed pass starts
            # inside its first unit)
            consumed, partial = 0, skip

            def inside(unit: int, epoch: int = epoch, first: int = units[0], skip: int = skip) -> list[int]:
                order = self.order.within(unit, self._images_per_unit(unit), epoch)
                return order[skip:] if unit == first else order

            for batch in self._image_batches(units, inside):
                n_images = next(iter(batch.values())).shape[0]
                self.n_images_read += n_images
                # a batch may end inside a unit (a live batch within a chunk) or span several
                partial += n_images
                while consumed < len(units) and partial >= self._images_per_unit(units[consumed]):
                    partial -= self._images_per_unit(units[consumed])
                    consumed += 1
                    self.order.advance(1)
                self.order.partial = partial
                yield batch

    def token_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.image_activations():
            if self._hook_widths is None:
                self._hook_widths = [batch[name].shape[-1] for name in self.hook_names]
            yield {name: acts.reshape(-1, acts.shape[-1]).to(self.out_device) for name, acts in batch.items()}

    def coalesced_token_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Token batches joined into pieces of one mixing-buffer refill.

        Feeding the buffer one image batch at a time would copy its storage once per image batch; one piece per
        refill makes that a single copy. The tokens and their order are unchanged. Tokens read but not yet in a
        piece wait in `self._pending` (an attribute, so a checkpoint holds them).
        """
        target = max(self.train_batch_size_tokens, int(self.buffer_tokens * (1 - self.mix_fraction)))
        for batch in self.token_batches():
            self._pending = [*self._pending, batch]
            count = self._pending_count()
            while count >= target:
                # exactly `target` tokens per piece, whatever the image batch sizes: the mixing buffer then
                # shuffles the same pieces whether tokens come from a live harvest or from the cache
                joined = {name: torch.cat([b[name] for b in self._pending]) for name in self.hook_names}
                count -= target
                self._pending = [{name: t[target:] for name, t in joined.items()}] if count else []
                yield {name: t[:target] for name, t in joined.items()}

    def _pending_count(self) -> int:
        return sum(next(iter(b.values())).shape[0] for b in self._pending)

    def _build(self) -> Iterator[torch.Tensor]:
        pieces = (pack(piece, self.hook_names) for piece in self.coalesced_token_batches())
        return self.mixer.batches(pieces)

    def __iter__(self) -> ActivationProvider:
        return self

    def __next__(self) -> Any:
        if self._batches is None:
            self._batches = self._build()
        packed = next(self._batches)
        self.batches_served += 1
        self._snapshots.append(self._snapshot())
        if len(self.hook_names) == 1:
            return packed
        return unpack(packed, self._widths(), self.hook_names)

    def _widths(self) -> list[int]:
        if self._hook_widths is None:
            raise RuntimeError("the hook widths are known once the first tokens were read")
        return self._hook_widths

    # -- exact resume -----------------------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            self.batches_served,
            self.order.state_dict(),
            self.n_images_read,
            list(self._pending),
            self.mixer.snapshot(),
        )

    def _snapshot_after(self, batches: int | None) -> _Snapshot:
        if batches is None or batches == self.batches_served:
            return self._snapshot()
        for snapshot in self._snapshots:
            if snapshot.batches_served == batches:
                return snapshot
        raise RuntimeError(
            f"the data position after {batches} batches is no longer known (the provider has served "
            f"{self.batches_served}); lower prefetch_batches"
        )

    def state_dict(self, after_batches: int | None = None) -> dict[str, Any]:
        """The position in the image stream (JSON); `state_tensors` holds the tokens waiting in the buffers.

        `after_batches`: the state as it was when that many batches had been served (a prefetching thread may
        have drawn further than the trainer has consumed); default now.
        """
        snapshot = self._snapshot_after(after_batches)
        return {
            **snapshot.order,
            "n_images_read": snapshot.n_images_read,
            "batches_served": snapshot.batches_served,
            "hook_widths": self._hook_widths,
        }

    def state_tensors(self, after_batches: int | None = None) -> dict[str, torch.Tensor]:
        """The tokens waiting in the mixing buffer and the piece being gathered, and the shuffle's RNG state."""
        snapshot = self._snapshot_after(after_batches)
        mixing = snapshot.mixing
        tensors = {"mixing.generator_state": mixing.generator_state}
        for key, value in (("mixing.storage", mixing.storage), ("mixing.serving", mixing.serving)):
            if value is not None:
                tensors[key] = value
        if snapshot.pending:
            for name in self.hook_names:
                tensors[f"pending.{name}"] = torch.cat([b[name] for b in snapshot.pending])
        # safetensors wants each tensor to own its memory (serving and storage are views of one shuffle)
        return {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}

    def load_state_dict(self, state: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Continue from a saved position; with `tensors` (see `state_tensors`) the batch stream is identical to
        the uninterrupted one, without them (checkpoints of earlier releases) the buffered tokens are skipped."""
        if self._batches is not None:
            raise RuntimeError("load the data position before drawing the first batch")
        self.order.load_state_dict(state)
        self.n_images_read = state.get("n_images_read", 0)
        if tensors is None:
            return
        self.batches_served = state["batches_served"]
        self._hook_widths = state["hook_widths"]
        device = self.out_device

        def restored(key: str) -> torch.Tensor | None:
            return tensors[key].to(device) if key in tensors else None

        self.mixer.restore(
            MixingState(
                restored("mixing.storage"), restored("mixing.serving"), tensors["mixing.generator_state"]
            )
        )
        if f"pending.{self.hook_names[0]}" in tensors:
            self._pending = [{name: tensors[f"pending.{name}"].to(device) for name in self.hook_names}]
        self._snapshots.clear()


@dataclass(frozen=True)
class _Snapshot:
    """The provider between two served batches (tensors shared, not copied)."""

    batches_served: int
    order: dict[str, Any]
    n_images_read: int
    pending: list[dict[str, torch.Tensor]]
    mixing: MixingState
