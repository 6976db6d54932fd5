"""The batches sae_lens' trainer draws: counted, with Ctrl-C and SIGTERM taken only between training steps.

An interrupt raised in the middle of a step (or of a periodic checkpoint) leaves the optimiser, the trainer's
counters and the data position out of step with each other, so a checkpoint saved then cannot continue the run
exactly. The feed defers an interrupt that arrives during a step to the trainer's next request for data, where
every batch drawn so far has been trained on; an interrupt that arrives while the trainer waits for data (a long
harvest) is raised at once, since that batch was not trained on either way.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)


class TrainerFeed(Iterator[Any]):
    """Wraps the trainer's data provider; `consumed` counts the batches handed to the trainer."""

    def __init__(self, batches: Iterator[Any], consumed: int = 0) -> None:
        self.batches, self.consumed = batches, consumed
        self._drawing = False
        self._pending: BaseException | None = None

    def __iter__(self) -> TrainerFeed:
        return self

    def __next__(self) -> Any:
        self._raise_pending()
        self._drawing = True
        try:
            batch = next(self.batches)
        finally:
            self._drawing = False
        self.consumed += 1
        return batch

    def _raise_pending(self) -> None:
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error

    def interrupt(self, error: BaseException) -> None:
        """Stop training with `error`: now if the trainer is waiting for data, else at its next request."""
        if self._drawing:
            raise error
        if self._pending is None:
            logger.warning("interrupted: stopping after this training step")
        self._pending = error

    @property
    def interrupt_pending(self) -> bool:
        return self._pending is not None


@contextmanager
def interrupts_between_steps(feed: TrainerFeed) -> Iterator[None]:
    """Route SIGINT (Ctrl-C -> KeyboardInterrupt) and SIGTERM (-> sae_lens' InterruptedException, as its LM
    runner raises it) through `feed.interrupt` while inside; handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield
        return
    from sae_lens.training._interruption import InterruptedException  # lazy: sae_lens

    def handler(signum: int, frame: Any) -> None:
        feed.interrupt(KeyboardInterrupt() if signum == signal.SIGINT else InterruptedException())

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
        if feed.interrupt_pending:
            logger.warning("the interrupt came during the last training step: the run finishes and is saved")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored while inside (a checkpoint being written must not be cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
