"""`run_steerability(cfg)`: the steerability command as one library call (resolve the inputs, measure, curves).

`sae-clip steerability` and the demo call it; `viz.steerability_report.write_steerability` writes what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from sae_clip_plugin.analysis.resolve import ResolvedRun, resolve_run
from sae_clip_plugin.analysis.steerability.config import SteerabilityConfig
from sae_clip_plugin.analysis.steerability.metric import (
    SteerabilityResult,
    as_pixels,
    steerability,
    steering_curves,
)
from sae_clip_plugin.analysis.vocabulary import default_vocabulary, load_vocabulary, text_embeddings
from sae_clip_plugin.training.sources import image_source


@dataclass
class SteerabilityRun:
    """What one steerability command measured: the per-feature result and, when asked, steering curves."""

    config: SteerabilityConfig
    result: SteerabilityResult
    curves: pd.DataFrame | None = None


def resolve_steerability_inputs(cfg: SteerabilityConfig) -> ResolvedRun:
    """The model (or its random control), the SAE (none for neurons), the hook and the image spec of `cfg`."""
    if not cfg.sae and not cfg.neurons:
        raise ValueError("pass --sae PATH (SAE features) or --neurons --hook NAME (neuron baseline)")
    return resolve_run(
        model=cfg.model,
        sae=None if cfg.neurons else cfg.sae,
        hook=cfg.hook,
        images=cfg.images,
        device=cfg.device,
        random_model=cfg.random_model,
        random_seed=cfg.random_seed,
        need_hook="--neurons needs --hook (e.g. blocks.6.hook_resid_post)",
        need_images="--images is required (an image folder, hf:<name>, a datasets folder, or a registered name)",
    )


def steerability_pixels(cfg: SteerabilityConfig, run: ResolvedRun) -> torch.Tensor:
    """The images the measurement averages over: --max-images of --images, drawn with seed + 1."""
    assert run.images is not None
    source = image_source(run.images, split=cfg.split, max_images=cfg.max_images, seed=cfg.seed + 1)
    return as_pixels(run.model, source.with_transform(run.model.preprocess))


@torch.inference_mode()
def run_steerability(
    cfg: SteerabilityConfig,
    inputs: ResolvedRun | None = None,
    pixels: torch.Tensor | None = None,
    text: torch.Tensor | None = None,
    progress: bool = True,
) -> SteerabilityRun:
    """Measure what `cfg` says. `inputs`, `pixels`, `text` reuse objects already loaded for these settings (the demo
    measures several SAEs on one model); by default they are resolved from `cfg`."""
    run = inputs or resolve_steerability_inputs(cfg)
    sae = None if cfg.neurons else run.sae
    vocabulary = load_vocabulary(cfg.vocabulary or default_vocabulary(run.model_spec.removeprefix("random:")))
    pixels = steerability_pixels(cfg, run) if pixels is None else pixels
    text = text_embeddings(run.model, vocabulary) if text is None else text
    common: dict[str, Any] = dict(
        hook_name=run.hook,
        tokens=cfg.tokens,
        mode=cfg.mode,
        use_error_term=not cfg.no_error_term,
        readout_scale=cfg.readout_scale,
        text=text,
        method=cfg.method,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    result = steerability(run.model, sae, pixels, vocabulary, cfg.parsed_features(), cfg.strength, cfg.threshold,
                          relative_strength=cfg.relative_strength, progress=progress, **common)  # fmt: skip
    result.summary["random_model"] = run.model_spec.startswith("random:")
    result.summary["images"] = str(cfg.images)
    curves = None
    if cfg.strengths:
        curves = steering_curves(run.model, sae, pixels, vocabulary, cfg.curve_features, cfg.strengths, cfg.threshold,
                                 **common)  # fmt: skip
    return SteerabilityRun(cfg, result, curves)
