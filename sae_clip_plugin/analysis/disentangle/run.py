"""`disentangle_tasks(cfg)`: `sae-clip disentangle` as one library call (resolve the inputs, build each task,
suppress); `viz.disentangle_report.write_disentangle_outputs` writes what it returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sae_clip_plugin.analysis.disentangle.config import DisentangleCommandConfig
from sae_clip_plugin.analysis.disentangle.evaluate import DisentangleResult, run_disentangle
from sae_clip_plugin.analysis.disentangle.tasks import SpuriousTask, build_task
from sae_clip_plugin.analysis.resolve import resolve_run


def disentangle_tasks(
    cfg: DisentangleCommandConfig, on_result: Callable[[DisentangleResult], None] | None = None
) -> list[tuple[DisentangleResult, SpuriousTask]]:
    """(result, task) for every --task, in order; `on_result` sees each result as soon as it is measured."""
    torch.manual_seed(cfg.seed)
    experiment = cfg.experiment()  # checks the knobs before anything is loaded
    run = resolve_run(model=cfg.model, sae=cfg.sae, device=cfg.device, world=("task", cfg.task),
                      check_model=not cfg.no_check_model)  # fmt: skip
    if not run.saes:
        raise ValueError(
            "no SAEs given: pass --sae FOLDER (an SAE, or a folder of them) or --sae RELEASE:SAE_ID"
        )
    results = []
    for task_spec in cfg.task:
        options: dict[str, Any] = {"placement": cfg.word_placement} if cfg.word_placement else {}
        task = build_task(run.model, task_spec, n_select=cfg.n_select, n_eval=cfg.n_eval, seed=cfg.seed,
                          spurious_by=cfg.spurious_by, batch_size=cfg.batch_size, **options)  # fmt: skip
        result = run_disentangle(run.model, run.saes, task, experiment, progress=not cfg.no_progress)
        if on_result is not None:
            on_result(result)
        results.append((result, task))
    return results
