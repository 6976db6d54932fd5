"""Automatic selection of spurious SAE features (the paper's disentanglement experiments; arXiv 2504.08729).

Each image gets one activation per feature: the CLS token's, or the mean / max over chosen tokens.
Features are ranked by how well that activation separates images by the spurious attribute:

- `auroc`: P(act on a spurious image > act on a reference image) + 1/2 P(tie) (Mann-Whitney);
- `mean_diff`: mean act on spurious images minus mean act on reference images;
- `steering`: how much clamping the feature on raises the model's probability of spurious prompts.

A spurious label may have more than two values (e.g. the word written on an image). With a
`reference` value (e.g. "no text") each other value is compared against it; without one each value
is compared against all the others. A feature's score is its best comparison, so a feature that
fires on one written word only ranks as high as one that fires on any text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from sae_lens import SAE

from sae_clip_plugin.analysis.disentangle.config import POOLS
from sae_clip_plugin.analysis.disentangle.forward import ImageForwarder
from sae_clip_plugin.analysis.steering.interventions import sae_feature_hook, sae_hook_name
from sae_clip_plugin.model.device import model_device
from sae_clip_plugin.model.hooks import hook_layer
from sae_clip_plugin.model.tokens import TokenSelection

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

# ------------------------------------------------------------------------------------------------
# per-image feature activations


@torch.no_grad()
def image_feature_acts(
    model: HookedViT,
    sae: SAE[Any],
    pixels: torch.Tensor,
    *,
    tokens: str | Sequence[int] = "all",
    pool: str = "mean",
    batch_size: int = 64,
    hook_name: str | None = None,
) -> torch.Tensor:
    """[N, d_sae] activation of every feature per image: at CLS (`tokens="cls"`) or pooled over tokens.

    The model runs only up to the SAE's block. `pool` is "mean" or "max" over the selected tokens.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    name = sae_hook_name(sae, hook_name)
    layer = hook_layer(name)
    stop = None if layer is None else layer + 1
    device = model_device(model)
    out = []
    for start in range(0, int(pixels.shape[0]), batch_size):
        x = pixels[start : start + batch_size].to(device)
        _, cache = model.run_with_cache(x, names_filter=[name], stop_at_layer=stop)
        act = cache[name]
        if act.ndim == 3:
            positions = TokenSelection.parse(tokens).positions(act.shape[1])
            if positions is not None:
                act = act[:, positions]
        elif tokens != "all":
            raise ValueError(f"{name} has no token axis (shape {tuple(act.shape)}); use tokens='all'")
        f = sae.encode(act.to(sae.dtype)).float()
        if f.ndim == 3:
            f = f.mean(1) if pool == "mean" else f.amax(1)
        out.append(f.cpu())
    if not out:
        raise ValueError("no images to compute feature activations on")
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------
# separation scores


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-column AUROC of `pos` [n_pos, d] against `neg` [n_neg, d]: P(pos > neg) + 1/2 P(pos = neg).

    Exact, with ties counted half (the Mann-Whitney U statistic divided by n_pos * n_neg).
    """
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise ValueError(
            f"pos and neg must be [n, d] with the same d, got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError("AUROC needs at least one image on each side")
    neg_sorted = neg.double().T.contiguous().sort(dim=1).values  # [d, n_neg]
    values = pos.double().T.contiguous()  # [d, n_pos]
    below = torch.searchsorted(neg_sorted, values, right=False)  # neg < v
    not_above = torch.searchsorted(neg_sorted, values, right=True)  # neg <= v
    wins = below.double() + 0.5 * (not_above - below).double()
    return wins.sum(1) / (pos.shape[0] * neg.shape[0])


def mean_difference(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-column mean of `pos` minus mean of `neg` (float64)."""
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError("a mean difference needs at least one image on each side")
    return pos.double().mean(0) - neg.double().mean(0)


def _comparisons(spurious: torch.Tensor, reference: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(positive mask, negative mask) pairs: each value vs the reference, or each value vs the rest."""
    spurious = spurious.reshape(-1)
    values = [int(v) for v in torch.unique(spurious)]
    if reference is not None:
        if reference not in values:
            raise ValueError(
                f"no image has the reference spurious value {reference}; values present: {values}"
            )
        neg = spurious == reference
        pairs = [(spurious == v, neg) for v in values if v != reference]
    else:
        pairs = [(spurious == v, spurious != v) for v in values]
    if not pairs or len(values) < 2:
        raise ValueError(
            f"the spurious labels take only the value(s) {values}; selection needs images with and without "
            "the spurious attribute"
        )
    return pairs


def separation_scores(
    acts: torch.Tensor, spurious: torch.Tensor, *, method: str = "auroc", reference: int | None = None
) -> torch.Tensor:
    """[d_sae] score per feature: the best separation of any spurious value from its comparison set.

    `auroc` scores are AUROC - 0.5 (0 = no separation); `mean_diff` scores are mean differences.
    Only features that fire MORE on the spurious side score high (suppression removes activation).
    """
    if method not in ("auroc", "mean_diff"):
        raise ValueError(
            f"method must be 'auroc' or 'mean_diff' here (steering: steering_scores), got {method!r}"
        )
    if acts.shape[0] != spurious.reshape(-1).shape[0]:
        raise ValueError(f"{acts.shape[0]} activation rows but {spurious.numel()} spurious labels")
    best = None
    for pos, neg in _comparisons(spurious, reference):
        if method == "auroc":
            score = auroc(acts[pos], acts[neg]) - 0.5
        else:
            score = mean_difference(acts[pos], acts[neg])
        best = score if best is None else torch.maximum(best, score)
    assert best is not None
    return best


def top_k(scores: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> list[int]:
    """Indices of the k highest scores (ties broken by lower index), skipping `exclude`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = scores.double().clone()
    if exclude:
        s[torch.as_tensor(list(exclude), dtype=torch.long)] = float("-inf")
    order = torch.sort(-s, stable=True).indices  # stable: equal scores keep index order
    chosen = order[s[order] != float("-inf")][:k].tolist()
    if len(chosen) < k:
        raise ValueError(f"only {len(chosen)} features can be chosen but k={k}")
    return chosen


# ------------------------------------------------------------------------------------------------
# steering effect toward spurious prompts


@torch.no_grad()
def steering_scores(
    model: HookedViT,
    sae: SAE[Any],
    pixels: torch.Tensor,
    spurious_weights: torch.Tensor,
    class_weights: torch.Tensor,
    candidates: Sequence[int],
    *,
    values: torch.Tensor | Sequence[float] | float,
    tokens: str | Sequence[int] = "all",
    batch_size: int = 64,
) -> torch.Tensor:
    """Steering effect of each candidate feature toward spurious prompts ([len(candidates)]).

    The feature is clamped to its value (error term kept, as `steering.sae_feature_hook`) and the
    readout is softmax(logit_scale * cos) over the class prompts and the spurious prompts together
    (`class_weights` [d_embed, C], `spurious_weights` [d_embed, P], unit columns): the score is the
    mean rise of the probability mass on the spurious prompts. `values`: one clamp value per
    candidate, or one for all (e.g. a feature's largest activation on the selection images).
    """
    candidates = [int(c) for c in candidates]
    if isinstance(values, (int, float)):
        values = [float(values)] * len(candidates)
    values = [float(v) for v in values]
    if len(values) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(values)} clamp values")
    weights = torch.cat([class_weights, spurious_weights], 1).float().cpu()
    n_classes = class_weights.shape[1]
    scale = float(model.logit_scale)
    forward = ImageForwarder(model, pixels, batch_size=batch_size)

    def spurious_mass(embeds: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(scale * F.normalize(embeds, dim=-1) @ weights, dim=-1)
        return probs[:, n_classes:].sum(-1).double()

    clean = spurious_mass(forward.embeds())
    scores = []
    for feature, value in zip(candidates, values, strict=True):
        hook = sae_feature_hook(sae, {feature: value}, mode="set", tokens=tokens)
        scores.append(float((spurious_mass(forward.embeds([hook])) - clean).mean()))
    return torch.tensor(scores, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------
# one call


def select_spurious_features(
    acts: torch.Tensor,
    spurious: torch.Tensor,
    k: int,
    *,
    method: str = "auroc",
    reference: int | None = None,
) -> tuple[list[int], torch.Tensor]:
    """(top-k features, all scores) by `auroc` or `mean_diff` (see `steering_scores` for steering)."""
    scores = separation_scores(acts, spurious, method=method, reference=reference)
    return top_k(scores, k), scores
