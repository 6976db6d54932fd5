"""sae_lens' activation mixing buffer with its state in the open, so a checkpoint can hold it.

The algorithm is sae_lens' `mixing_buffer` (`sae_lens.training.mixing_buffer`) step for step: rows gather in
storage until it holds `buffer_size`, storage is shuffled, `int(buffer_size * mix_fraction)` rows stay for mixing
and the rest are served in batches of `batch_size`. Two differences, both for an exact resume (a run killed and
resumed from its checkpoint trains on the same batches as an uninterrupted one):

- the shuffle draws from the buffer's own seeded generator, not torch's global RNG;
- the rows waiting in the buffer and the generator's state are attributes (`snapshot` / `restore`), not the
  locals of a Python generator, so a checkpoint can save them.

Several hooks share one shuffle by packing their rows side by side, as sae_lens' `multi_hook_concat_split_iter`
does (`pack` / `unpack`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MixingState:
    """What a mixing buffer holds between two batches: enough to continue the identical batch stream."""

    storage: torch.Tensor | None  # rows kept for mixing (or gathered towards the next refill)
    serving: torch.Tensor | None  # shuffled rows of the current refill not served yet (whole batches)
    generator_state: torch.Tensor  # the shuffle generator's state


class MixingBuffer:
    """Batches of exactly `batch_size` rows from pieces of any size, shuffled across `buffer_size` rows."""

    def __init__(self, buffer_size: int, batch_size: int, mix_fraction: float = 0.5, seed: int = 0) -> None:
        if buffer_size < batch_size:
            raise ValueError(f"buffer size ({buffer_size}) must be >= batch size ({batch_size})")
        if not 0 <= mix_fraction <= 1:
            raise ValueError(f"mix_fraction must be in [0, 1], got {mix_fraction}")
        self.buffer_size, self.batch_size, self.mix_fraction = buffer_size, batch_size, mix_fraction
        self.generator = torch.Generator().manual_seed(seed)
        self.storage: torch.Tensor | None = None
        self.serving: torch.Tensor | None = None

    @torch.no_grad()
    def add(self, rows: torch.Tensor) -> None:
        """Take in one piece; once storage is full, shuffle it and move whole batches to serving."""
        if self.serving is not None and self.serving.shape[0]:
            raise RuntimeError("serve the current batches before adding rows")
        storage = rows if self.storage is None else torch.cat([self.storage, rows], dim=0)
        if storage.shape[0] >= self.buffer_size:
            if self.mix_fraction > 0:
                storage = storage[torch.randperm(storage.shape[0], generator=self.generator)]
            keep_for_mixing = int(self.buffer_size * self.mix_fraction)
            n_batches = max(1, (storage.shape[0] - keep_for_mixing) // self.batch_size)
            cutoff = n_batches * self.batch_size
            self.serving, storage = storage[:cutoff], storage[cutoff:]
        self.storage = storage

    def pop(self) -> torch.Tensor | None:
        """The next batch, or None when more rows must be added first."""
        if self.serving is None or not self.serving.shape[0]:
            return None
        batch, self.serving = self.serving[: self.batch_size], self.serving[self.batch_size :]
        return batch

    def batches(self, pieces: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Every batch of the stream `pieces`; at its end, the whole batches left in storage (as sae_lens)."""
        while True:
            batch = self.pop()
            if batch is not None:
                yield batch
                continue
            piece = next(pieces, None)
            if piece is None:
                break
            self.add(piece)
        if self.storage is not None:
            for start in range(
                0, self.storage.shape[0] // self.batch_size * self.batch_size, self.batch_size
            ):
                yield self.storage[start : start + self.batch_size]
            self.storage = None

    def snapshot(self) -> MixingState:
        """The state now (tensors are shared, not copied: the buffer never writes into them)."""
        return MixingState(self.storage, self.serving, self.generator.get_state())

    def restore(self, state: MixingState) -> None:
        self.storage, self.serving = state.storage, state.serving
        self.generator.set_state(state.generator_state)


def pack(rows: dict[str, torch.Tensor], hook_names: Sequence[str]) -> torch.Tensor:
    """Several hooks' rows side by side, so one shuffle moves them together (tokens stay aligned)."""
    if len(hook_names) == 1:
        return rows[hook_names[0]]
    return torch.cat([rows[name] for name in hook_names], dim=1)


def unpack(packed: torch.Tensor, widths: Sequence[int], hook_names: Sequence[str]) -> dict[str, torch.Tensor]:
    return dict(zip(hook_names, torch.split(packed, list(widths), dim=1), strict=True))
