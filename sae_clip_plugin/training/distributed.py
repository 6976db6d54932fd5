"""Which process of a `torchrun` job this is, and the few collectives the harvest and the training need.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; one process alone (no WORLD_SIZE, or 1)
is the default route and never touches torch.distributed. Why torch's own engine: users already launch, restart
and place jobs with torchrun / SLURM, and gloo (CPU) and NCCL (GPU) are the same code here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch

T = TypeVar("T")
# ranks wait for each other at the end of a harvest: a rank that finished its shards first may wait this long
DEFAULT_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank (0 = the one that writes shared files), world size, local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mine(self, items: list[T]) -> list[T]:
        """This rank's share of `items`: every world_size-th, from its rank (balanced, no duplicates or gaps)."""
        return items[self.rank :: self.world_size]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not an integer; torchrun sets it"
        ) from None


def current() -> Ranks:
    """The process group's view when one is initialised, else torchrun's environment (1 process without it)."""
    import torch.distributed as dist

    local = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), local)
    return Ranks(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), local)


def current_group() -> Ranks:
    """The initialised process group's ranks; one process when there is none (a library call never joins one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return current()
    return Ranks()


def backend_for(device: str) -> str:
    """NCCL when the ranks run on CUDA GPUs (one GPU per process), gloo on CPU."""
    return "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"


def init_from_env(device: str = "cpu", timeout: timedelta = DEFAULT_TIMEOUT) -> Ranks:
    """Join torchrun's process group when WORLD_SIZE > 1 (nothing to do for one process).

    On CUDA each process takes GPU LOCAL_RANK (`torchrun --nproc-per-node` = the GPUs of the node).
    """
    import torch.distributed as dist

    ranks = current()
    if not ranks.distributed or dist.is_initialized():
        return ranks
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError(
            f"WORLD_SIZE={ranks.world_size} but no MASTER_ADDR: launch the ranks with torchrun "
            "(torchrun --nproc-per-node N $(which sae-clip) ...), which sets both"
        )
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, timeout=timeout)
    return current()


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T | None:
    """Run `fn` on rank 0 while the other ranks wait; rank 0's error is raised on every rank.

    Why: an error that only rank 0 sees (a mismatching cache, no disk space) would otherwise leave the other
    ranks waiting at the next collective until the timeout, hours later.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return fn()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as err:
            error = err
    message = [None if error is None else (type(error).__name__, str(error))]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        name, text = message[0]
        raise _rebuild(name, text)
    return result


def _rebuild(name: str, text: str) -> Exception:
    """Rank 0's error on another rank: the same built-in type where there is one, so callers catch it alike."""
    import builtins

    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(f"{text} (raised on rank 0)")
    return RuntimeError(f"{name} on rank 0: {text}")
