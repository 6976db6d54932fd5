"""A table of every attention head's direct role: effect on the correct class, variance, typography, TextSpan.

Columns per (layer, head), over the images given (CLIP's logit scale applied; logits in logit units):

- `direct_effect`: mean direct contribution of the head to the correct class's logit minus its mean
  contribution to all class logits (positive: the head writes towards the right answer);
- `variance_share`: the variance over images of the head's direct contribution to the embedding, as a
  fraction of the embedding's variance (a head with 0 writes the same thing on every image);
- `typographic_effect` (typographic tasks only): see `typographic.typographic_head_effects`;
- `textspan`: the TextSpan description (Gandelsman et al. 2024, Alg. 1), the texts that explain most of
  the head's output variance, each with the fraction it explains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from tqdm.auto import tqdm

from sae_clip_plugin.analysis.decomposition.direct_effects import decompose_image_embedding
from sae_clip_plugin.analysis.decomposition.textspan import TextSpanEntry, text_span
from sae_clip_plugin.model.device import model_device

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


@dataclass
class HeadReport:
    direct_effect: torch.Tensor  # [layer, head]
    variance_share: torch.Tensor  # [layer, head]
    textspan: dict[tuple[int, int], list[TextSpanEntry]]
    typographic_effect: torch.Tensor | None = None  # [layer, head]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def textspan_text(self, layer: int, head: int) -> str:
        """The head's TextSpan description in one line: `text (share%); ...`, largest share first (the greedy order
        of TextSpan's Alg. 1 can pick a text that explains less before one that explains more)."""
        entries = sorted(self.textspan[layer, head], key=lambda e: -e.variance_explained)
        return "; ".join(f"{e.text} ({100 * e.variance_explained:.0f}%)" for e in entries)

    def top_heads(self, by: str = "direct_effect", n: int = 5) -> list[tuple[int, int]]:
        """The n heads with the largest value of column `by`."""
        values = getattr(self, by)
        if values is None:
            raise ValueError(f"this report has no {by}")
        order = torch.argsort(values.flatten(), descending=True, stable=True)[:n]
        n_heads = values.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads) for i in order]


class HeadContributions(NamedTuple):
    heads: torch.Tensor  # [N, layer, head, d_embed]: each head's direct contribution, summed over tokens
    embeds: torch.Tensor  # [N, d_embed]: the image embeddings (the decompositions' totals)
    logits: torch.Tensor  # [N, layer, head, class]: each head's direct logit attribution


@torch.no_grad()
def head_totals_and_logits(
    model: HookedViT,
    pixels: torch.Tensor,
    class_weights: torch.Tensor,
    batch_size: int = 16,
    progress: bool = False,
) -> HeadContributions:
    """Each head's direct contributions and logit attributions over `pixels`, in small batches (the per-token
    terms are large)."""
    device = model_device(model)
    heads, embeds, logits = [], [], []
    W = class_weights.to(device=device, dtype=torch.float64)
    starts = range(0, pixels.shape[0], batch_size)
    for start in tqdm(starts, desc="decomposing images", unit="batch", disable=not progress):
        parts = decompose_image_embedding(model, pixels[start : start + batch_size].to(device))
        total = parts.total()
        per_head = parts.head_totals()
        scale = float(model.logit_scale) / total.norm(dim=-1)
        heads.append(per_head.cpu())
        embeds.append(total.cpu())
        logits.append((per_head @ W * scale[:, None, None, None]).cpu())
    return HeadContributions(torch.cat(heads), torch.cat(embeds), torch.cat(logits))


def head_report(
    model: HookedViT,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor,
    texts: Sequence[str],
    text_embeddings: torch.Tensor,
    *,
    n_texts: int = 3,
    typographic_effect: torch.Tensor | None = None,
    batch_size: int = 16,
    progress: bool = False,
    contributions: HeadContributions | None = None,
) -> HeadReport:
    """Every head's row (see the module docstring) over `pixels` with true class `labels`.

    `contributions`: `head_totals_and_logits` of these pixels when the caller has them already.
    """
    if contributions is None:
        contributions = head_totals_and_logits(model, pixels, class_weights, batch_size, progress)
    heads, embeds, logits = contributions
    idx = torch.arange(len(labels))
    correct = logits[idx, :, :, labels.long()]  # [N, layer, head]
    direct = (correct - logits.mean(-1)).mean(0)
    total_var = float((embeds - embeds.mean(0)).pow(2).sum())
    variance = (heads - heads.mean(0)).pow(2).sum((0, 3)) / max(total_var, 1e-30)
    spans = {
        (layer, head): text_span(
            heads[:, layer, head], text_embeddings, texts, n_texts=min(n_texts, len(texts))
        )
        for layer in range(heads.shape[1])
        for head in range(heads.shape[2])
    }
    report = HeadReport(direct, variance, spans, typographic_effect)
    for layer, head in spans:
        row = {
            "layer": layer,
            "head": head,
            "direct_effect": float(direct[layer, head]),
            "variance_share": float(variance[layer, head]),
        }
        if typographic_effect is not None:
            row["typographic_effect"] = float(typographic_effect[layer, head])
        row["textspan"] = report.textspan_text(layer, head)
        report.rows.append(row)
    return report
