"""The concepts a feature's steering gains and loses beyond what any edit of the same size does.

Why: the mean readout shift delta_bar (arXiv 2504.08729, section 3) of any large edit loses the clean readout's
mass, so its most negative words are the words the images already read as (on the toy: triangle, heart, yellow for
every feature) and say nothing about the feature. `concept_shift` subtracts the mean delta_bar of random
directions of the same norm, steered the same way (the generic shift), and ranks the words by what is left. S, P
and the steerable flag stay the paper's, from the feature's own delta_bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from sae_clip_plugin.analysis.steerability.compare import random_directions
from sae_clip_plugin.analysis.steerability.metric import SteerabilityResult, steerability

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def generic_shift(
    model: HookedViT,
    result: SteerabilityResult,
    norm: float,
    pixels: torch.Tensor,
    n_directions: int = 16,
    seed: int = 0,
    **kwargs: Any,
) -> torch.Tensor:
    """Mean delta_bar ([V]) of `n_directions` random directions of length `norm` at `result`'s hook, steered
    with `result`'s strength setting (relative, or the mean absolute strength)."""
    s = result.summary
    dirs = random_directions(n_directions, _width(model, s["hook_name"]), norm, seed)
    strength = {"relative_strength": s["relative_strength"]} if s.get("relative_strength") is not None else {
        "strength": s["mean_strength"]}  # fmt: skip
    base = steerability(
        model, dirs, pixels, result.vocabulary, hook_name=s["hook_name"], **strength, **kwargs
    )
    return base.delta_bar.mean(0)


def _width(model: HookedViT, hook_name: str) -> int:
    from sae_clip_plugin.analysis.steerability.metric import _basis_for  # the hook's width, probed once

    return _basis_for(model, None, hook_name).size


def same_norm_shift(
    model: HookedViT,
    sae: Any,
    result: SteerabilityResult,
    pixels: torch.Tensor,
    n_directions: int = 16,
    seed: int = 0,
    **kwargs: Any,
) -> torch.Tensor:
    """`generic_shift` for `result` of `sae`'s features ([V], float64): random directions of the SAE's mean
    decoder-row norm (norm 1 for neurons, sae=None). `kwargs` are the steerability kwargs that made `result`; its
    strength setting and hook are taken from `result`, the rest (readout_scale, text, tokens, ...) pass on."""
    norm = 1.0 if sae is None else float(sae.W_dec.detach().norm(dim=-1).mean())
    rest = {
        k: v for k, v in kwargs.items() if k not in ("strength", "relative_strength", "hook_name", "seed")
    }
    return generic_shift(model, result, norm, pixels, n_directions, seed, **rest).double()


def ranked_words(
    words: Sequence[str], shift: torch.Tensor, n_concepts: int, threshold: float = 0.0
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(gained, lost): the `n_concepts` words with the largest rise and fall in `shift` ([V]), beyond `threshold`."""
    order = torch.argsort(shift, descending=True).tolist()
    gained = [(words[i], float(shift[i])) for i in order[:n_concepts] if shift[i] > threshold]
    lost = [(words[i], float(shift[i])) for i in order[::-1][:n_concepts] if shift[i] < -threshold]
    return gained, lost


def concept_shift(
    model: HookedViT,
    sae: Any,
    pixels: torch.Tensor,
    features: Sequence[int],
    vocabulary: Any = None,
    *,
    n_concepts: int = 5,
    n_directions: int = 16,
    seed: int = 0,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Per feature: S, P, steerable (the paper's) and the words gained / lost beyond the generic shift.

    kwargs go to `steerability` (relative_strength or strength, readout_scale, text, tokens, ...); the random
    directions have the SAE's mean decoder-row norm (an SAE's feature) or norm 1 (neurons, sae=None).
    """
    result = steerability(model, sae, pixels, vocabulary, features=list(features), **kwargs)
    generic = same_norm_shift(model, sae, result, pixels, n_directions, seed, **kwargs)
    out = []
    for row, delta in zip(result.table.itertuples(index=False), result.delta_bar.double(), strict=True):
        gained, lost = ranked_words(result.vocabulary, delta - generic, n_concepts)
        out.append({
            "feature": int(row.feature), "strength": float(row.strength), "S": float(row.S), "P": float(row.P),
            "top_concept": row.top_concept, "steerable": bool(row.steerable), "gained": gained, "lost": lost,
        })  # fmt: skip
    return out
