"""`run_eval(cfg)`: `sae-clip eval` as one library call; `viz.metrics_report.write_metrics_results` writes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sae_clip_plugin.analysis.metrics.config import EvalConfig
from sae_clip_plugin.analysis.metrics.evaluate import evaluate_saes
from sae_clip_plugin.analysis.metrics.measures import MeasureSettings
from sae_clip_plugin.analysis.metrics.second_encoder import second_encoder
from sae_clip_plugin.analysis.pixels import materialize_images, open_eval_images
from sae_clip_plugin.analysis.resolve import resolve_run


@dataclass
class EvalRun:
    """One evaluation: the metrics table (one row per SAE) and the title its reports carry."""

    config: EvalConfig
    table: Any  # pandas DataFrame, as evaluate_saes returns it
    title: str
    model_spec: str


def _fits_in_memory(images: Any, max_images: int | None, cfg: Any, budget_gb: float) -> bool:
    """Whether the decoded pixels of the evaluated images fit in `budget_gb` (float32)."""
    try:
        n = len(images)
    except TypeError:
        return False
    n = min(n, max_images) if max_images else n
    return n * cfg.n_channels * cfg.image_size**2 * 4 <= budget_gb * 2**30


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = print, progress: bool = True) -> EvalRun:
    """Evaluate every SAE `cfg.sae` names (each folder of SAE folders expanded), loading them one at a time."""
    if not cfg.sae:
        raise ValueError("pass --sae FOLDER (an SAE or a folder of them), or --replot")
    if not cfg.images:
        raise ValueError(
            "pass --images <a folder of images, with one subfolder per class for zero-shot metrics> or a "
            "registered name (toy)"
        )
    run = resolve_run(model=cfg.model, sae=cfg.sae, images=cfg.images, device=cfg.device, load_saes=False,
                      world=("eval_images", [cfg.images]))  # fmt: skip
    images, classnames, templates = open_eval_images(cfg.images, cfg.max_images, seed=cfg.seed)
    if classnames is None:
        images = images.with_transform(run.model.preprocess)
        log(f"{cfg.images} has no class subfolders: reconstruction and sparsity only (the zero-shot and ablation "
            "metrics need one subfolder per class)")  # fmt: skip
    if _fits_in_memory(images, cfg.max_images, run.model.cfg, cfg.preload_gb):
        log("reading the images once into memory")
        images = materialize_images(images, run.model.preprocess, cfg.max_images, cfg.batch_size)
    measures = None
    if cfg.measures:
        embed = second_encoder(cfg.ms_encoder, run.model) if "monosemanticity" in cfg.measures else None
        measures = MeasureSettings(cfg.measures, cfg.ms_variant, embed)
    log(f"evaluating {len(run.sae_sources)} SAE(s) on {run.model_spec} ({run.device}), images: {cfg.images}")
    table = evaluate_saes(
        run.model,
        run.sae_sources,
        images,
        classnames=classnames,
        templates=cfg.templates or templates,
        batch_size=cfg.batch_size,
        max_images=cfg.max_images,
        downstream=not cfg.no_downstream and classnames is not None,
        check_model=not cfg.no_check_model,
        progress=progress,
        measures=measures,
    )
    title = f"SAE metrics ({run.model_spec}, {int(table['n_images'].iloc[0])} images of {cfg.images})"
    return EvalRun(cfg, table, title, run.model_spec)
