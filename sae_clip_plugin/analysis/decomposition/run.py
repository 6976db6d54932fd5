"""`decompose_task(cfg)`: `sae-clip decompose` as one library call (per-head direct effects, typographic effects,
TextSpan texts, and where on one image the top heads take their contribution from).

The image embedding is split exactly into per-(layer, head, token) and per-neuron direct contributions
(Gandelsman, Efros & Steinhardt, ICLR 2024); images come from the task's selection split (the images
`sae-clip disentangle` chooses its heads on). `viz.decomposition_report.write_decomposition` writes the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sae_clip_plugin.analysis.decomposition.config import DecomposeConfig
from sae_clip_plugin.analysis.decomposition.direct_effects import direct_logit_attribution
from sae_clip_plugin.analysis.decomposition.heads import HeadReport, head_report, head_totals_and_logits
from sae_clip_plugin.analysis.decomposition.textspan import text_bank
from sae_clip_plugin.analysis.decomposition.typographic import effects_from_margins, margins_from_head_logits
from sae_clip_plugin.analysis.disentangle.tasks import build_task
from sae_clip_plugin.analysis.resolve import resolve_run
from sae_clip_plugin.analysis.vocabulary import default_vocabulary, text_embeddings


@dataclass
class TokenMaps:
    """Where on one image the top heads take their contribution from: one [grid, grid] map per head."""

    pixels: torch.Tensor  # [1, 3, H, W], the image (model-normalised)
    maps: list[torch.Tensor]
    titles: list[str]
    what: str  # the logit difference the maps show
    by: str  # the column the heads were ranked by


@dataclass
class DecompositionResult:
    """What `decompose_task` measured on one task."""

    config: DecomposeConfig
    task: str
    n_images: int
    n_texts: int
    report: HeadReport
    typographic_effect: torch.Tensor | None  # [layers, heads] on typographic tasks
    token_maps: TokenMaps
    summary: dict[str, Any]
    preprocess: Any  # the model's preprocess config (to show the image)

    @property
    def by(self) -> str:
        return self.token_maps.by


@torch.inference_mode()
def decompose_task(cfg: DecomposeConfig, progress: bool = True) -> DecompositionResult:
    torch.manual_seed(cfg.seed)
    run = resolve_run(model=cfg.model, device=cfg.device)
    model = run.model
    options = {"placement": cfg.word_placement} if cfg.word_placement else {}
    task = build_task(model, cfg.task, n_select=cfg.n_select, n_eval=cfg.n_select, seed=cfg.seed, **options)
    split = task.select
    weights = model.zero_shot_weights(task.classnames, task.templates)
    texts = text_bank(cfg.texts or default_vocabulary(run.model_spec.removeprefix("random:")))
    bank = text_embeddings(model, texts)
    twins = split.twins() if task.kind == "typographic" else None
    # one decomposition of every image (typographic: clean and attacked, so TextSpan sees the text) serves both
    # the head table and the typographic effects
    contributions = head_totals_and_logits(model, split.pixels, weights, cfg.batch_size, progress=progress)
    typo = None
    if twins is not None:
        att, cln = twins
        written, true = split.spurious[att], split.labels[att]
        typo = effects_from_margins(margins_from_head_logits(contributions.logits[att], written, true),
                                    margins_from_head_logits(contributions.logits[cln], written, true))  # fmt: skip
    report = head_report(model, split.pixels, split.labels, weights, texts, bank, n_texts=cfg.n_texts,
                         typographic_effect=typo, contributions=contributions)  # fmt: skip
    by = "typographic_effect" if typo is not None else "direct_effect"
    top = report.top_heads(by, n=3)
    if twins is not None:
        index = int(twins[0][0])
        favoured, against = int(split.spurious[index]), int(split.labels[index])
        what = f"written '{task.classnames[favoured]}' - true '{task.classnames[against]}'"
    else:
        index, favoured, against = 0, int(split.labels[0]), None
        what = f"correct class '{task.classnames[favoured]}'"
    image = split.pixels[index : index + 1].to(run.device)
    dla = direct_logit_attribution(model, image, weights)
    margin = dla.heads[0, ..., favoured] - (dla.heads[0, ..., against] if against is not None else 0)
    grid = model.cfg.grid_size
    maps = TokenMaps(
        pixels=split.pixels[index : index + 1],
        maps=[margin[layer, head, 1:].reshape(grid, grid) for layer, head in top],
        titles=[f"L{layer}H{head} (CLS {float(margin[layer, head, 0]):+.2f})" for layer, head in top],
        what=what,
        by=by,
    )
    summary = {
        "task": task.name,
        "n_images": len(split.pixels),
        "top_heads": {by: [f"L{layer}H{head}" for layer, head in report.top_heads(by, n=5)]},
        "textspan": {f"L{layer}H{head}": report.textspan_text(layer, head) for layer, head in top},
    }
    return DecompositionResult(cfg, task.name, len(split.pixels), len(texts), report, typo, maps, summary,
                               model.cfg.preprocess)  # fmt: skip
