"""The paper's steerability metric (arXiv 2504.08729, section 3), for SAE features, neurons or directions.

For feature j clamped to strength s at every selected token (error term kept), with the readout
p = softmax(scale * e_img . T^T) over a vocabulary of bare words (e_img, rows of T L2-normalised):
    delta_bar = mean over images of (p_steered - p_clean)                  (a V-vector)
    S = sum_v delta_bar_v^2          (steerability)
    P = max_v delta_bar_v            (steering power)
    top concept = vocabulary[argmax_v delta_bar_v]
    steerable = S > threshold        (paper: 0.10 at s = 150)
    polysemanticity = || delta_bar . T - (sum_v t_v) / ||sum_v t_v|| ||_2
Summary: steerable fraction, and coverage = number of distinct top concepts over steerable features.
The neuron baseline (sae=None, hook_name=...) and the random-model control
(`random_vision_model(model)`) run through the same code.

Where the paper leaves a choice for models other than its ViT-B/32 (our choices, each reproducing the paper's
setting on the paper's model): the readout scale is the model's learned logit scale (the paper's 100 is
ViT-B/32's; `vocabulary.resolve_readout_scale`), the strength is relative to the hook's typical activation norm
(the paper's s = 150 is 5.41 of it; `steering.strength`), and the vocabulary is the model's world's broad word
list (the paper: 5000 common English words; the toy: every word its world can show). Without the first two the
toy's readout saturates and a random image tower passes S > 0.10 more often than the trained one
(docs/toy_results.md, "Steerability per layer").
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from sae_lens import SAE

from sae_clip_plugin.analysis.pixels import as_pixels
from sae_clip_plugin.analysis.steerability.engine import fast_mean_shift, naive_mean_shift
from sae_clip_plugin.analysis.steering.bases import Basis, make_basis
from sae_clip_plugin.analysis.steering.strength import (
    PAPER_RELATIVE_STRENGTH,
    PAPER_STRENGTH,
    absolute_strengths,
)
from sae_clip_plugin.analysis.vocabulary import (
    PAPER_READOUT_SCALE,
    load_vocabulary,
    resolve_readout_scale,
    text_embeddings,
)
from sae_clip_plugin.config_types import check_number
from sae_clip_plugin.tables import markdown_table

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

PAPER_THRESHOLD = 0.10
READOUT_SCALE = PAPER_READOUT_SCALE  # the paper's; the default is the model's own (None)
METHODS = ("fast", "naive")


def select_features(n: int, features: Any = None, seed: int = 0) -> list[int]:
    """None: all n; a float in (0, 1]: that fraction at random (paper: 1/20); an int: that many at random;
    a sequence: those indices."""
    if features is None:
        return list(range(n))
    if isinstance(features, bool):
        raise TypeError("features must be None, a fraction, a count or a list of indices")
    if isinstance(features, numbers.Integral):
        features = int(features)
    elif isinstance(features, numbers.Real):
        features = float(features)
    if isinstance(features, float):
        if not 0 < features <= 1:
            raise ValueError(f"a fraction of features must be in (0, 1], got {features}")
        features = max(1, round(n * features))
    if isinstance(features, int):
        if not 0 < features <= n:
            raise ValueError(f"cannot sample {features} of {n} features")
        gen = torch.Generator().manual_seed(seed)
        return sorted(torch.randperm(n, generator=gen)[:features].tolist())
    chosen = [int(f) for f in features]
    bad = [f for f in chosen if not 0 <= f < n]
    if bad or not chosen:
        raise ValueError(f"feature indices {bad or chosen} are out of range for a dictionary of {n}")
    return chosen


def metrics_from_shift(
    delta_bar: torch.Tensor, text: torch.Tensor, vocabulary: Sequence[str], threshold: float
) -> pd.DataFrame:
    """S, P, top concept, steerable flag and polysemanticity per row of delta_bar ([F, V])."""
    delta = delta_bar.double()
    t = text.double().cpu()
    mean_dir = t.sum(0) / t.sum(0).norm()
    S = (delta**2).sum(-1)
    P, top = delta.max(-1)
    poly = (delta @ t - mean_dir).norm(dim=-1)
    finite = torch.isfinite(delta).all(-1)
    if not finite.all():
        warnings.warn(
            f"{int((~finite).sum())} of {len(finite)} steered readouts are not finite (the strength overflows the "
            "model); their rows have finite=False, no top concept, and count as not steerable",
            stacklevel=2,
        )
    return pd.DataFrame(
        {
            "S": S.numpy(),
            "P": P.numpy(),
            "top_concept": [
                vocabulary[i] if ok else None for i, ok in zip(top.tolist(), finite.tolist(), strict=True)
            ],
            "steerable": ((threshold < S) & finite).numpy(),
            "polysemanticity": poly.numpy(),
            "finite": finite.numpy(),
        }
    )


def summarise(table: pd.DataFrame, **context: Any) -> dict[str, Any]:
    steerable = table[table["steerable"]]
    counts = Counter(steerable["top_concept"])
    return {
        "n_features": len(table),
        "n_steerable": len(steerable),
        "steerable_fraction": float(len(steerable) / max(1, len(table))),
        "coverage": len(counts),
        "top_concepts": dict(counts.most_common(20)),
        "mean_S": float(table["S"].mean()) if len(table) else float("nan"),
        **context,
    }


def strength_text(summary: dict[str, Any]) -> str:
    """How strongly features were steered, in words: absolute, or relative with what it came to."""
    if summary.get("relative_strength") is None:
        return f"strength {summary.get('strength')} (absolute)"
    return (
        f"relative strength {summary['relative_strength']:.3g} (decoded edit {summary['relative_strength']:.3g}x a "
        f"typical input of norm {summary['typical_input_norm']:.3g}; mean absolute strength "
        f"{summary['mean_strength']:.3g}; the paper's s = {PAPER_STRENGTH:g} on ViT-B/32 is relative 5.41)"
    )


@dataclass
class SteerabilityResult:
    """Per-feature table, summary dict and the raw delta_bar [F, V] (rows follow table['feature'])."""

    table: pd.DataFrame
    summary: dict[str, Any]
    delta_bar: torch.Tensor
    vocabulary: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        s = self.summary
        lines = [
            f"# Steerability: {s.get('basis')} at {s.get('hook_name')}",
            "",
            f"- model: {s.get('model_spec')}",
            f"- features: {s['n_features']} of {s.get('dictionary_size')}, images: {s.get('n_images')}, "
            f"vocabulary: {s.get('vocabulary_size')} words",
            f"- {strength_text(s)} ({s.get('mode')}, tokens {s.get('tokens')}, error term "
            f"{s.get('use_error_term')}), threshold S > {s.get('threshold')}, readout scale {s.get('readout_scale')}",
            f"- steerable: {s['n_steerable']} / {s['n_features']} = {100 * s['steerable_fraction']:.1f}%",
            f"- coverage (distinct top concepts of steerable features): {s['coverage']}",
            "",
            "| top concept | steerable features |",
            "| --- | --- |",
            *[f"| {k} | {v} |" for k, v in s["top_concepts"].items()],
            "",
            "Top features by S:",
            "",
            frame_markdown(self.table.sort_values("S", ascending=False).head(20)),
        ]
        return "\n".join(lines) + "\n"


def frame_markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (pandas' to_markdown needs the optional tabulate package)."""
    return markdown_table(list(frame.columns), [list(r) for r in frame.itertuples(index=False)])


def _basis_for(model: HookedViT, sae: SAE[Any] | torch.Tensor | None, hook_name: str | None) -> Basis:
    width = None
    if sae is None and hook_name is not None:
        model.check_hook_names([hook_name])
        width = model._hook_shape(hook_name)[-1] if hasattr(model, "_hook_shape") else None
        if width is None:
            width = _probe_width(model, hook_name)
    return make_basis(sae, hook_name, width)


@torch.no_grad()
def _probe_width(model: HookedViT, hook_name: str) -> int:
    s = model.cfg.image_size
    pixels = torch.zeros(1, model.cfg.n_channels, s, s, device=model.embed.W_E.device)
    _, cache = model.run_with_cache(pixels, names_filter=[hook_name])
    return int(cache[hook_name].shape[-1])


def _shift(model, basis, pixels, text, edits, *, method, **kwargs) -> torch.Tensor:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "naive":
        kwargs.pop("batch_size", None)
        return naive_mean_shift(model, basis, pixels, text, edits, **kwargs)
    return fast_mean_shift(model, basis, pixels, text, edits, **kwargs)


def _checked_relative_strength(
    strength: float | None, relative_strength: float | None, threshold: float, readout_scale: float | None
) -> float | None:
    """The relative strength to steer with after checking the numbers: the paper's when neither strength
    is given, None when `strength` (absolute) is."""
    if strength is not None and relative_strength is not None:
        raise ValueError("pass strength (absolute) or relative_strength, not both")
    if strength is None and relative_strength is None:
        relative_strength = PAPER_RELATIVE_STRENGTH
    check_number("strength" if strength is not None else "relative_strength",
                 strength if strength is not None else relative_strength)  # fmt: skip
    check_number("threshold", threshold, low=0)
    if readout_scale is not None:
        check_number("readout_scale", readout_scale, low=0, low_open=True)
    return relative_strength


def _readout_inputs(
    model: HookedViT,
    images: Any,
    vocabulary: str | os.PathLike | Sequence[str] | None,
    text: torch.Tensor | None,
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """(pixels, vocabulary words, their normalised text embeddings: `text` when given, else computed)."""
    pixels = as_pixels(model, images)
    words = load_vocabulary(vocabulary)
    text = text_embeddings(model, words) if text is None else text
    return pixels, words, text


@dataclass
class _Strengths:
    """The absolute strength each chosen feature is set to, and how it was given: absolute, or relative to
    the model (then with the typical input norm it was scaled by)."""

    values: list[float]
    strength: float | None
    relative: float | None
    typical_norm: float | None = None

    @classmethod
    def resolve(
        cls,
        model: HookedViT,
        basis: Basis,
        pixels: torch.Tensor,
        chosen: list[int],
        strength: float | None,
        relative: float | None,
        tokens: Any,
    ) -> _Strengths:
        """`strength` for every feature, or each feature's strength relative to the model's typical input."""
        if strength is None:
            values, typical_norm = absolute_strengths(model, basis, pixels, chosen, relative, tokens)
            return cls(values, strength, relative, typical_norm)
        return cls([float(strength)] * len(chosen), strength, relative)

    def add_columns(self, table: pd.DataFrame, chosen: list[int]) -> None:
        """The feature, its strength and (when relative) the relative strength, as the table's first columns."""
        table.insert(0, "feature", chosen)
        table.insert(1, "strength", self.values)
        if self.relative is not None:
            table.insert(2, "relative_strength", float(self.relative))

    def describe(self) -> dict[str, Any]:
        """The summary's strength entries."""
        return {
            "strength": float(self.strength) if self.strength is not None else None,
            "relative_strength": float(self.relative) if self.relative is not None else None,
            "typical_input_norm": self.typical_norm,
            "mean_strength": float(sum(self.values) / len(self.values)),
        }


def steerability(
    model: HookedViT,
    sae: SAE[Any] | torch.Tensor | None,
    images: Any,
    vocabulary: str | os.PathLike | Sequence[str] | None = None,
    features: Any = None,
    strength: float | None = None,
    threshold: float = PAPER_THRESHOLD,
    *,
    relative_strength: float | None = None,
    hook_name: str | None = None,
    tokens: Any = "all",
    mode: str = "set",
    use_error_term: bool = True,
    means: torch.Tensor | None = None,
    readout_scale: float | None = None,
    text: torch.Tensor | None = None,
    method: str = "fast",
    batch_size: int = 256,
    image_batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> SteerabilityResult:
    """Steer each chosen feature and measure the readout shift (the paper's steerability metric; arXiv 2504.08729).

    sae: a sae_lens SAE (its features at its hook), None (the neurons at `hook_name`), or a [n, d]
        tensor of directions at `hook_name`.
    features: None (all), a fraction (paper: 1/20), a count (random, `seed`) or a list of indices.
    strength: the absolute value each feature is set to (the paper's is 150). Without it the strength is
        relative to the model (`relative_strength`, default 5.41, which is 150 on the paper's ViT-B/32 SAEs):
        see `steering_strength` for why an absolute 150 does not carry over between models.
    readout_scale: the readout's softmax scale; None: the model's learned logit scale (100 on the paper's
        ViT-B/32, 18 on the toy CLIP; `vocabulary.resolve_readout_scale` says why).
    text: precomputed normalised vocabulary embeddings (reuse across runs); else computed once here.
    method: "fast" (cached prefix, batched suffix) or "naive" (one full forward per feature); equal results.
    """
    relative_strength = _checked_relative_strength(strength, relative_strength, threshold, readout_scale)
    readout_scale = resolve_readout_scale(model, readout_scale)
    pixels, words, text = _readout_inputs(model, images, vocabulary, text)
    if text.shape[0] != len(words):
        raise ValueError(f"text has {text.shape[0]} rows but the vocabulary has {len(words)} words")
    basis = _basis_for(model, sae, hook_name)
    chosen = select_features(basis.size, features, seed)
    strengths = _Strengths.resolve(model, basis, pixels, chosen, strength, relative_strength, tokens)
    edits = list(zip(chosen, strengths.values, strict=True))
    delta_bar = _shift(model, basis, pixels, text, edits, method=method, mode=mode, tokens=tokens,
                       use_error_term=use_error_term, means=means, readout_scale=readout_scale,
                       batch_size=batch_size, image_batch_size=image_batch_size, progress=progress)  # fmt: skip
    table = metrics_from_shift(delta_bar, text, words, threshold)
    strengths.add_columns(table, chosen)
    summary = summarise(
        table,
        **basis.describe(),
        model_spec=model.cfg.model_spec,
        **strengths.describe(),
        threshold=threshold,
        mode=mode,
        tokens=tokens if isinstance(tokens, str) else list(tokens),
        use_error_term=use_error_term,
        readout_scale=readout_scale,
        n_images=len(pixels),
        vocabulary_size=len(words),
        seed=seed,
        method=method,
    )
    return SteerabilityResult(table, summary, delta_bar, words)


def steering_curves(
    model: HookedViT,
    sae: SAE[Any] | torch.Tensor | None,
    images: Any,
    vocabulary: str | os.PathLike | Sequence[str] | None = None,
    features: Any = 8,
    strengths: Sequence[float] = (0.0, 10.0, 25.0, 50.0, 100.0, 150.0, 200.0, 300.0),
    threshold: float = PAPER_THRESHOLD,
    **kwargs: Any,
) -> pd.DataFrame:
    """S, P, top concept and steerable flag per (feature, strength): the steering curves.

    All (feature, strength) pairs share one cached prefix and run in the same batches.
    """
    for s in strengths:
        check_number("strength", s)
    pixels, words, text = _readout_inputs(model, images, vocabulary, kwargs.pop("text", None))
    basis = _basis_for(model, sae, kwargs.pop("hook_name", None))
    chosen = select_features(basis.size, features, kwargs.pop("seed", 0))
    edits = [(f, float(s)) for f in chosen for s in strengths]
    method = kwargs.pop("method", "fast")
    kwargs["readout_scale"] = resolve_readout_scale(model, kwargs.get("readout_scale"))
    delta_bar = _shift(model, basis, pixels, text, edits, method=method, **kwargs)
    table = metrics_from_shift(delta_bar, text, words, threshold)
    table.insert(0, "feature", [f for f, _ in edits])
    table.insert(1, "strength", [s for _, s in edits])
    return table
