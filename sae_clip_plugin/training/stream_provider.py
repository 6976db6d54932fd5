"""Training live from a streamed image set (WebDataset shards, `hf:<name>` streamed): no cache, no image list.

Images are decoded on the fly in DataLoader workers and never stored. Each worker is a slot reading its part of a
pass (streaming.py: tar i of the pass's shard order goes to slot i mod workers); the slots' batches are taken in
turn, slot 0 first, a slot that ran out dropped (`in_turn`: the order torch's DataLoader itself gives, made
explicit so that a resumed run can start the turn at any slot). The feed from there on is the map-style one
(provider.py): tokens -> pieces of one refill -> the seeded mixing buffer.

The data position a checkpoint saves (`StreamCursor`) is the pass, each slot's (shards finished, samples read of
the next) after the last batch taken from it, and the slot whose turn is next. Resuming opens each slot's stream
at its position (whole shards skipped unopened, samples inside a shard passed over undecoded), so with the same
number of workers the resumed run reads the same batches in the same order: the SAE is the uninterrupted run's,
bit for bit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sae_clip_plugin.training.harvest import ActivationHarvester, NonFiniteActivationsError
from sae_clip_plugin.training.provider import ActivationProvider
from sae_clip_plugin.training.streaming import SlotPosition, StreamingImages

logger = logging.getLogger(__name__)

_END = ("", None, None)  # a slot's last item: its part of the pass is done


@dataclass
class SlotBatch:
    """One DataLoader batch of one slot: the good images, the corrupt ones counted, the position after it."""

    slot: int
    keys: list[str]
    pixels: torch.Tensor | None
    skipped: int
    position: SlotPosition | None  # None: the batch held no sample, only the end mark
    ended: bool


class _SlotReader(IterableDataset):
    """Worker w reads slot w's part of pass `epoch` from `starts[w]` (None: that slot had finished), then _END."""

    def __init__(self, source: StreamingImages, epoch: int, starts: list[SlotPosition | None]) -> None:
        super().__init__()
        self.source, self.epoch, self.starts = source, epoch, starts

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor | None, SlotPosition | None]]:
        info = get_worker_info()
        slot = info.id if info is not None else 0
        start = self.starts[slot]
        if start is not None:
            yield from self.source.samples(slot, len(self.starts), start, self.epoch)
        yield _END


def _collate(samples: list[tuple[str, torch.Tensor | None, SlotPosition | None]]) -> SlotBatch:
    info = get_worker_info()
    ended = samples[-1][2] is None  # _END: only ever last
    real = [s for s in samples if s[2] is not None]
    good = [(k, p) for k, p, _ in real if p is not None]
    return SlotBatch(
        slot=info.id if info is not None else 0,
        keys=[k for k, _ in good],
        pixels=torch.stack([p for _, p in good]) if good else None,
        skipped=len(real) - len(good),
        position=real[-1][2] if real else None,
        ended=ended,
    )


def in_turn(batches: Iterator[SlotBatch], n_slots: int, first: int = 0) -> Iterator[SlotBatch]:
    """The slots' batches in turn from slot `first`, each slot's next batch, a slot dropped after its last.

    torch's DataLoader already returns its workers' batches in turn from worker 0; waiting here for the slot whose
    turn it is holds at most one batch per slot, and lets a resumed pass start its turn at any slot.
    """
    waiting: dict[int, deque[SlotBatch]] = {s: deque() for s in range(n_slots)}
    live, turn = set(range(n_slots)), first
    while live:
        if turn in live:
            while not waiting[turn]:
                batch = next(batches, None)
                if batch is None:
                    raise RuntimeError(f"stream slot {turn} stopped without its end mark (a reader died)")
                waiting[batch.slot].append(batch)
            batch = waiting[turn].popleft()
            if batch.ended:
                live.discard(turn)
            yield batch
        turn = (turn + 1) % n_slots


class StreamCursor:
    """The data position in a stream: the pass, each slot's position, the slot whose turn is next.

    `state_dict` / `load_state_dict` stand in for EpochOrder's in the provider's checkpoint (key "stream").
    """

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self.epoch, self.next_slot = 0, 0
        self.slots: list[SlotPosition | None] = [(0, 0)] * n_slots  # None: the slot finished this pass
        self.images_this_pass = 0  # good images read this pass (the pass's length once it ends)
        self.skipped = 0  # corrupt samples skipped, all passes
        self.pass_images: int | None = None  # the images of a whole pass, once one ended

    def took(self, batch: SlotBatch) -> None:
        """`batch` was handed on: its slot stands after it, the next slot's turn comes."""
        if batch.position is not None:
            self.slots[batch.slot] = batch.position
        if batch.ended:
            self.slots[batch.slot] = None
        self.next_slot = (batch.slot + 1) % self.n_slots
        self.skipped += batch.skipped
        self.images_this_pass += len(batch.keys)

    def end_pass(self) -> int:
        """Start the next pass; returns the images of the one that ended."""
        n = self.images_this_pass
        self.pass_images = n if self.pass_images is None else self.pass_images
        self.epoch, self.next_slot, self.images_this_pass = self.epoch + 1, 0, 0
        self.slots = [(0, 0)] * self.n_slots
        return n

    def state_dict(self) -> dict[str, Any]:
        return {
            "stream": {
                "n_slots": self.n_slots,
                "epoch": self.epoch,
                "next_slot": self.next_slot,
                "slots": [list(p) if p is not None else None for p in self.slots],
                "images_this_pass": self.images_this_pass,
                "skipped": self.skipped,
                "pass_images": self.pass_images,
            }
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "stream" not in state:
            raise ValueError(
                "this checkpoint's data position is for an image list (a folder, a dataset, a cache), not a stream; "
                "resume with the --images of the checkpointed run"
            )
        saved = state["stream"]
        if saved["n_slots"] != self.n_slots:
            raise ValueError(
                f"the checkpoint's stream position is for {saved['n_slots']} reader slot(s) (--num-workers "
                f"{saved['n_slots'] if saved['n_slots'] > 1 else 0}), this run has {self.n_slots}; resume with the "
                "--num-workers of the checkpointed run"
            )
        self.epoch, self.next_slot = saved["epoch"], saved["next_slot"]
        self.slots = [tuple(p) if p is not None else None for p in saved["slots"]]  # type: ignore[misc]
        self.images_this_pass, self.skipped = saved["images_this_pass"], saved["skipped"]
        self.pass_images = saved["pass_images"]


class StreamActivationProvider(ActivationProvider):
    """ActivationProvider over a stream: pass after pass, each read once, resumable at any batch.

    `on_pass_end(n_images)` is called when the first pass ends (the runner checks the budget against the pass's
    length, known only then).
    """

    def __init__(
        self,
        harvester: ActivationHarvester,
        source: StreamingImages,
        train_batch_size_tokens: int,
        on_pass_end: Callable[[int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(harvester.hook_names, 1, lambda _: 1, _unused, train_batch_size_tokens, **kwargs)
        source.with_transform(source.transform or harvester.model.preprocess)
        self.harvester, self.source = harvester, source
        # the position stands in for EpochOrder's (the shard order per pass is the source's: shuffle_seed)
        self.order = self.cursor = StreamCursor(max(1, harvester.num_workers))  # type: ignore[assignment]
        self.on_pass_end = on_pass_end

    @property
    def skipped(self) -> int:
        """Corrupt samples skipped so far (all passes)."""
        return self.cursor.skipped

    def image_activations(self) -> Iterator[dict[str, torch.Tensor]]:
        cursor = self.cursor
        while True:
            model = self.harvester.model
            was_training = model.training
            model.eval()
            try:
                h = self.harvester
                batches = pass_batches(
                    self.source,
                    cursor.epoch,
                    list(cursor.slots),
                    cursor.next_slot,
                    h.batch_size,
                    h.num_workers,
                )
                for batch in batches:
                    cursor.took(batch)
                    if batch.pixels is None:
                        continue
                    acts = self.harvester.activations(batch.pixels)
                    _check_finite(acts, batch.keys)
                    self.n_images_read += len(batch.keys)
                    yield acts
            finally:
                model.train(was_training)
            n = cursor.end_pass()
            logger.info("pass %d over the stream done: %d images, %d corrupt samples skipped so far",
                        cursor.epoch, n, cursor.skipped)  # fmt: skip
            if n == 0:
                raise ValueError(
                    f"the stream {self.source.name!r} gave no readable image in a whole pass ({cursor.skipped} "
                    "corrupt samples skipped); check the shards or the dataset's image column"
                )
            if self.on_pass_end is not None and cursor.epoch == 1:  # the first pass: the length is known now
                self.on_pass_end(n)


def _check_finite(acts: dict[str, torch.Tensor], keys: list[str]) -> None:
    """Name the first streamed image whose activations are not finite, before they reach the SAE."""
    for name, a in acts.items():
        bad = ~torch.isfinite(a.flatten(1)).all(1)
        if bad.any():
            raise NonFiniteActivationsError(
                f"streamed image {keys[int(bad.nonzero()[0])]!r} gives non-finite activations at {name}: remove it "
                "from its shard (model_dtype float32 avoids overflow)"
            )


def pass_batches(
    source: StreamingImages,
    epoch: int,
    starts: list[SlotPosition | None],
    first: int,
    batch_size: int,
    num_workers: int,
) -> Iterator[SlotBatch]:
    """One pass's batches from the slots' positions (one slot per DataLoader worker), in turn from slot `first`."""
    if len(starts) != max(1, num_workers):
        raise ValueError(f"{len(starts)} slot positions for {num_workers} workers")
    loader = DataLoader(
        _SlotReader(source, epoch, starts),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(0),  # leave the global RNG alone (as image_loader)
    )
    return in_turn(iter(loader), len(starts), first)


def _unused(*_: Any) -> Iterator[dict[str, torch.Tensor]]:
    raise AssertionError("a stream provider reads its images in image_activations")  # pragma: no cover


def first_activations(
    harvester: ActivationHarvester, source: StreamingImages, n_images: int
) -> dict[str, torch.Tensor]:
    """The activations of the stream's first `n_images` readable images (the in-sample evaluation set, as the
    first images of a folder are), read in the order training reads the first pass."""
    source.with_transform(source.transform or harvester.model.preprocess)
    got: list[dict[str, torch.Tensor]] = []
    count = 0
    n_slots, h = max(1, harvester.num_workers), harvester
    was_training = h.model.training
    h.model.eval()
    try:
        for batch in pass_batches(source, 0, [(0, 0)] * n_slots, 0, h.batch_size, h.num_workers):
            if batch.pixels is None:
                continue
            take = min(n_images - count, len(batch.keys))
            got.append(h.activations(batch.pixels[:take]))
            count += take
            if count >= n_images:
                break
    finally:
        h.model.train(was_training)
    if not got:
        raise ValueError(
            f"the stream {source.name!r} gave no readable image; check the shards or the image column"
        )
    return {name: torch.cat([g[name] for g in got]) for name in harvester.hook_names}
