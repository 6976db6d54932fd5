"""Training the SAEs of several hooks on the ranks of a torchrun job: the hooks are split across the ranks.

sae_lens' trainer is one process. Rank r trains hooks[r::world_size], one after another, each exactly as the
one-hook run `sae-clip train --hook H --out OUT/H` would (same seed, same batches, same output folder), so each
SAE equals the one trained alone. With a cache path every rank first harvests its share of the cache of all
hooks (cache_ranks.py), then reads it; without one, each rank harvests live for its own hooks.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from sae_clip_plugin.training import distributed
from sae_clip_plugin.training.config import VisionSAERunnerConfig
from sae_clip_plugin.training.distributed import Ranks

logger = logging.getLogger(__name__)


def one_hook_config(cfg: VisionSAERunnerConfig, hook: str) -> VisionSAERunnerConfig:
    """The config of training `hook` alone: output in OUT/<hook> (the layout of a several-hook run), checkpoints
    where that run keeps them."""
    if len(cfg.hook_names) == 1:
        return cfg
    out = Path(cfg.output_path) / hook
    checkpoints = cfg.checkpoint_path
    if checkpoints is not None:
        auto = checkpoints == str(Path(cfg.output_path) / "checkpoints")
        checkpoints = str(out / "checkpoints") if auto else str(Path(checkpoints) / hook)
    return dataclasses.replace(cfg, hook_name=hook, output_path=str(out), checkpoint_path=checkpoints)


def train_across_ranks(cfg: VisionSAERunnerConfig, ranks: Ranks | None = None) -> dict[str, Any]:
    """This rank's hooks, trained; returns {hook: its finished VisionSAETrainingRunner}. Every rank returns
    once all are done (a barrier), so the job ends with every SAE saved."""
    from sae_clip_plugin.training.runner import VisionSAETrainingRunner  # lazy: the runner imports sae_lens

    ranks = ranks or distributed.current_group()
    hooks = cfg.hook_names
    if cfg.cached_activations_path is not None:
        VisionSAETrainingRunner(cfg).harvest(ranks)
    mine = ranks.mine(hooks)
    if not mine:
        logger.warning(
            "rank %d has no hook to train (%d hooks on %d ranks): launch at most %d processes",
            ranks.rank,
            len(hooks),
            ranks.world_size,
            len(hooks),
        )
    runners: dict[str, Any] = {}
    for hook in mine:
        runner = VisionSAETrainingRunner(one_hook_config(cfg, hook))
        runner.ranks = Ranks()  # the cache is finished: each hook's run is one process, as when trained alone
        runner.run()
        runners[hook] = runner
    distributed.barrier()
    return runners
