"""The activation cache written by the ranks of a torchrun job: the same files, byte for byte, as one process.

    rank 0: lock the folder, create or check the manifest, fold in what a killed run's ranks finished, plan
            the bytes against the free space                                  (the other ranks wait; its errors
                                                                               are raised on every rank)
    all:    the missing shards, every world_size-th from the rank's own, written as one process writes them;
            each finished shard is noted in RANKS_DONE (never in the manifest, which only rank 0 writes)
    rank 0: after a barrier, the notes go into the manifest and state.json; the lock is released

A rank killed at any point leaves finished shards noted and unfinished ones unlisted: the next run (with any
number of processes) folds in the notes and harvests exactly the rest. Rows are those of the one-process cache
because each shard covers the same images; their bytes are equal where the forward pass gives each image the
same numbers whatever else is in its batch (so on CPU; GPUs' kernels may differ in the last bit across batch
shapes, see docs/distributed.md).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_clip_plugin.locking import folder_lock
from sae_clip_plugin.training import distributed
from sae_clip_plugin.training.cache import (
    ActivationDiskCache,
    _open_or_create,
    _write_shards,
    check_space,
    mark_done,
    merge_done,
    missing_shards,
)
from sae_clip_plugin.training.distributed import Ranks
from sae_clip_plugin.training.harvest import ActivationHarvester
from sae_clip_plugin.training.sources import ImageSource

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def write_across_ranks(
    path: Path,
    model: HookedViT,
    source: ImageSource,
    harvester: ActivationHarvester,
    config: dict[str, Any],
    ids: list[str],
    ranks: Ranks,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
    ignore_free_space: bool = False,
) -> ActivationDiskCache:
    """This rank's share of the missing shards of the cache at `path`; every rank returns the finished cache."""
    with ExitStack() as held:

        def prepare() -> None:
            held.enter_context(folder_lock(path, "activation cache"))  # rank 0 holds it for the whole job
            cache = _open_or_create(path, model, source, harvester, config, ids)
            check_space(cache, harvester, missing_shards(cache), progress, ignore_free_space)

        distributed.main_first(prepare)
        cache = ActivationDiskCache(path)
        mine = ranks.mine(missing_shards(cache))
        _write_shards(
            cache,
            source,
            harvester,
            mine,
            progress and ranks.is_main,  # one bar: rank 0's shards stand for the job's progress
            on_shard,
            record=lambda shard: mark_done(path, shard),
            desc=f"Caching activations (rank 0's share, {ranks.world_size} ranks)",
            share=True,
        )
        distributed.barrier()
        distributed.main_first(lambda: merge_done(ActivationDiskCache(path)))
    return ActivationDiskCache(path)
