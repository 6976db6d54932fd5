"""What a feature dashboard shows, computed once: top images with patch heatmaps, activation histogram, steering.

    data = collect_dashboard_data(model, sae, images, features=[12, 40], vocabulary="toy")
    write_dashboard(data, "dashboard.html")          # viz.dashboard_html
    plot_feature(data.features[0])                   # viz.dashboard_figures (notebooks)

Activations are the SAE's features at its hook on the token positions its metadata selects (CLS is
token 0, patches follow row-major, so patch p sits at grid row p // side, column p % side). Images are
shown as the model saw them: the preprocessed pixels with the normalisation undone. The steering
effect is the steerability module's mean readout shift for the feature clamped to `strength`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_clip_plugin.analysis.pixels import as_pixels
from sae_clip_plugin.analysis.vocabulary import load_vocabulary, text_embeddings
from sae_clip_plugin.model.device import model_device
from sae_clip_plugin.model.hooks import on_residual_stream, stop_layer

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's (open_clip OPENAI_DATASET_MEAN)
DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)
AUTO_STRENGTH = 4.0  # strength="auto": this many times the feature's largest activation
# readout changes smaller than this (0.1 percentage points of probability) are noise, not concepts gained or lost
MIN_SHOWN_CHANGE = 1e-3


@dataclass
class TopImage:
    """One top-activating image: its pixels as shown, the patch grid of the feature, and scores."""

    index: int  # position in the image set
    image: np.ndarray  # [S, S, 3] uint8, what the model saw
    heatmap: np.ndarray | None  # [side, side] patch activations (None when the SAE reads no patch)
    max_activation: float  # max over the SAE's token positions
    cls_activation: float | None  # at token 0, None when the SAE does not read CLS


@dataclass
class FeatureData:
    """Everything the dashboard shows for one feature."""

    feature: int
    hook_name: str
    top: list[TopImage]
    activations: np.ndarray  # the feature's activations on every token it was read at (zeros included)
    n_tokens_seen: int
    n_images: int
    density: float  # fraction of tokens where the feature fires (> 0)
    max_activation: float
    steering: dict[str, Any] = field(default_factory=dict)  # strength, S, P, gained, lost
    label: str = ""  # why the feature was chosen (free text)
    # the decoder direction read out directly (ln_post + projection): (word, cosine) best first; [] when not on the stream
    direct_readout: list[tuple[str, float]] = field(default_factory=list)
    # the field's per-feature measures over the dashboard's images (`card_measures`): NaN where undefined
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def nonzero(self) -> np.ndarray:
        return self.activations[self.activations > 0]


@dataclass
class DashboardData:
    """Features of one SAE, plus what identifies the SAE and the image set."""

    hook_name: str
    model_spec: str | None
    d_sae: int
    token_selection: str
    patch_side: int
    n_images: int
    features: list[FeatureData]
    title: str = ""
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# helpers


def patch_side(n_tokens: int) -> int:
    """Side of the patch grid for a ViT with a CLS token: n_tokens = 1 + side**2."""
    side = math.isqrt(n_tokens - 1)
    if side * side != n_tokens - 1:
        raise ValueError(f"{n_tokens} tokens is not 1 CLS + a square grid of patches")
    return side


def patch_grid(token_values: np.ndarray | torch.Tensor, n_tokens: int) -> np.ndarray:
    """[n_tokens] per-token values (CLS first) -> [side, side] patch grid, row-major."""
    values = np.asarray(token_values, dtype=np.float64).reshape(-1)
    if values.shape[0] != n_tokens:
        raise ValueError(f"expected {n_tokens} token values, got {values.shape[0]}")
    side = patch_side(n_tokens)
    return values[1:].reshape(side, side)


def display_images(pixels: torch.Tensor, preprocess_cfg: dict[str, Any] | None) -> np.ndarray:
    """Normalised pixel tensors [B, 3, S, S] -> uint8 images [B, S, S, 3] (mean/std undone)."""
    cfg = preprocess_cfg or {}
    mean = torch.tensor(cfg.get("mean") or DEFAULT_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.get("std") or DEFAULT_STD, dtype=torch.float32).view(1, -1, 1, 1)
    x = pixels.detach().float().cpu() * std + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def feature_activations(
    model: HookedViT, sae: Any, pixels: torch.Tensor, features: Sequence[int], batch_size: int = 64
) -> torch.Tensor:
    """SAE activations of `features` at every token: [n_images, n_tokens, n_features] (float32, CPU).

    Tokens outside the SAE's token selection are NaN (the SAE never reads them).
    """
    from sae_clip_plugin.model.sae_splice import sae_token_positions  # lazy: sae_lens

    hook = sae.cfg.metadata.hook_name
    if not hook:
        raise ValueError("the SAE has no metadata.hook_name; set sae.cfg.metadata.hook_name")
    n_tokens = model.cfg.n_tokens
    positions = sae_token_positions(sae, n_tokens)
    idx = torch.as_tensor(list(features), dtype=torch.long)
    out = torch.full((len(pixels), n_tokens, len(idx)), float("nan"))
    device = model_device(model)
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].to(device)
        _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=stop_layer(hook))
        acts = cache[hook]
        if acts.ndim != 3 or acts.shape[1] != n_tokens:
            raise ValueError(
                f"hook {hook!r} has no token axis of {n_tokens}; dashboards need a per-token hook"
            )
        feats = sae.encode(acts[:, positions].to(sae.dtype))
        out[start : start + len(batch), positions] = feats[..., idx.to(feats.device)].float().cpu()
    return out


def steering_effect(
    model: HookedViT,
    sae: Any,
    pixels: torch.Tensor,
    features: Sequence[int],
    vocabulary: Any = None,
    strength: float | Sequence[float] | str = 150.0,
    n_concepts: int = 5,
    beyond_random: bool = True,
    n_directions: int = 16,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Per feature: S, P and the concepts gained / lost when it is clamped to `strength` (steering module);
    changes of at most MIN_SHOWN_CHANGE are left out of gained / lost.

    `strength`: one value for all features, one per feature (features sharing a value run together), or
    "relative": the model-relative default of the steerability metric (`analysis.steering_strength`).
    `beyond_random`: gained / lost are measured beyond the mean shift of `n_directions` random directions of the
    same norm steered the same way (`steerability.concepts`): any large edit loses the clean readout's words, so
    without it every card lists the same lost concepts. S, P and steerable are the paper's either way.
    """
    from sae_clip_plugin.analysis.steerability.concepts import same_norm_shift  # lazy: sae_lens
    from sae_clip_plugin.analysis.steerability.metric import steerability  # lazy: sae_lens
    from sae_clip_plugin.analysis.steering.strength import PAPER_RELATIVE_STRENGTH  # lazy: sae_lens

    features = [int(f) for f in features]
    if strength == "relative":
        groups = [(list(range(len(features))), {"relative_strength": PAPER_RELATIVE_STRENGTH})]
    elif isinstance(strength, str):
        raise ValueError(f"strength must be a number, one number per feature or 'relative', got {strength!r}")
    else:
        strengths = (
            [float(strength)] * len(features)
            if isinstance(strength, (int, float))
            else [float(s) for s in strength]
        )
        if len(strengths) != len(features):
            raise ValueError(f"{len(strengths)} strengths for {len(features)} features; pass one per feature")
        groups = [([i for i, s in enumerate(strengths) if s == value], {"strength": value})
                  for value in dict.fromkeys(strengths)]  # fmt: skip
    out: list[dict[str, Any]] = [{} for _ in features]
    for slots, how in groups:
        result = steerability(
            model, sae, pixels, vocabulary, features=[features[i] for i in slots], **how, **kwargs
        )
        generic = (
            same_norm_shift(model, sae, result, pixels, n_directions, **kwargs) if beyond_random else None
        )
        _effects(result, slots, out, n_concepts, generic)
    return out


def _effects(
    result: Any,
    slots: list[int],
    out: list[dict[str, Any]],
    n_concepts: int,
    generic: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Fill `out[slot]` from one steerability run, row by row (rows follow `slots`); gained / lost beyond the
    `generic` shift when given."""
    from sae_clip_plugin.analysis.steerability.concepts import ranked_words  # lazy: sae_lens

    relative = result.summary.get("relative_strength")
    rows = zip(result.table.itertuples(index=False), result.delta_bar.double(), strict=True)
    for slot, (row, delta) in zip(slots, rows, strict=True):
        shift = delta if generic is None else delta - generic
        gained, lost = ranked_words(result.vocabulary, shift, n_concepts, MIN_SHOWN_CHANGE)
        out[slot] = {
            "strength": float(row.strength),
            "relative_strength": relative,
            "S": float(row.S),
            "P": float(row.P),
            "top_concept": row.top_concept,
            "steerable": bool(row.steerable),
            "beyond_random": generic is not None,
            "gained": gained,
            "lost": lost,
        }
    return out


# ------------------------------------------------------------------------------------------------
# the collection


def top_images_for(
    acts: torch.Tensor, images: np.ndarray, n_tokens: int, n_top: int, has_patches: bool, has_cls: bool
) -> list[TopImage]:
    """The (at most) `n_top` images with the largest max activation, among those where the feature fires.

    acts: [n_images, n_tokens] with NaN where the SAE does not read.
    """
    filled = torch.nan_to_num(acts, nan=float("-inf"))
    best = filled.max(dim=1).values
    order = [i for i in torch.argsort(best, descending=True, stable=True)[:n_top].tolist() if best[i] > 0]
    top = []
    for i in order:
        row = acts[i]
        top.append(
            TopImage(
                index=int(i),
                image=images[i],
                heatmap=patch_grid(torch.nan_to_num(row, nan=0.0), n_tokens) if has_patches else None,
                max_activation=float(best[i]),
                cls_activation=float(row[0]) if has_cls else None,
            )
        )
    return top


def decoder_readouts(
    model: HookedViT,
    sae: Any,
    features: Sequence[int],
    vocabulary: Any,
    n_words: int = 3,
    text: torch.Tensor | None = None,
) -> list[list[tuple[str, float]]]:
    """Per feature, the vocabulary words its decoder direction writes towards along the direct path to the image
    embedding (cosine with each word's text embedding; `text`: those embeddings when the caller has them);
    empty for hooks outside the residual stream or models without a text tower."""
    # lazy: transformer_lens
    from sae_clip_plugin.analysis.decomposition.direct_effects import direction_readout

    hook = sae.cfg.metadata.hook_name or ""
    if not on_residual_stream(hook) or getattr(model, "text", None) is None or model.cfg.d_embed is None:
        return [[] for _ in features]
    words = load_vocabulary(vocabulary)
    text = (text_embeddings(model, words) if text is None else text).double().cpu()
    embedded = direction_readout(model, sae.W_dec[list(features)])
    cosine = torch.nn.functional.normalize(embedded, dim=-1) @ text.T
    top = cosine.topk(min(n_words, len(words)), dim=-1)
    return [
        [(words[int(i)], float(v)) for v, i in zip(vals, idx, strict=True)]
        for vals, idx in zip(*top, strict=True)
    ]


def _checked_features(features: Sequence[int], d_sae: int, labels: Sequence[str] | None) -> list[int]:
    """The feature indices as ints, after checking there is one at least, each in range, and one label each."""
    features = [int(f) for f in features]
    if not features:
        raise ValueError("no features to show: pass at least one feature index")
    bad = [f for f in features if not 0 <= f < d_sae]
    if bad:
        raise ValueError(f"features {bad} are out of range for an SAE with d_sae={d_sae}")
    if labels is not None and len(labels) != len(features):
        raise ValueError(f"{len(labels)} labels for {len(features)} features; pass one label per feature")
    return features


def card_measures(
    acts: torch.Tensor, pixels: torch.Tensor, preprocess: dict[str, Any] | None, positions: Sequence[int]
) -> list[dict[str, float]]:
    """Per feature of `acts` [N, tokens, F]: the monosemanticity score (ViSAEBench's top-16 variant of Pach et al.,
    arXiv 2504.02821, image codes max-pooled over the tokens read, second encoder: a colour histogram of the
    pixels, which the SAE never saw) and localisation (Moran's I of the patch maps, ViSAEBench's rules); NaN where a
    measure is undefined (a feature that never varies, too few images with a usable patch map)."""
    from sae_clip_plugin.analysis.metrics.localisation import localisation_scores
    from sae_clip_plugin.analysis.metrics.monosemanticity import monosemanticity_scores
    from sae_clip_plugin.analysis.metrics.second_encoder import colour_histogram

    read = acts[:, list(positions)]
    codes = torch.nan_to_num(read, nan=0.0).amax(1)
    ms = monosemanticity_scores(codes, colour_histogram(pixels, preprocess), "top16")
    patches = [p for p in positions if p > 0]
    moran = (
        localisation_scores(torch.nan_to_num(acts[:, patches], nan=0.0), min_images=min(50, len(pixels)))
        if patches and patch_side(acts.shape[1]) ** 2 == len(patches)
        else torch.full((acts.shape[-1],), float("nan"))
    )
    return [{"monosemanticity": float(m), "localisation": float(i)} for m, i in zip(ms, moran, strict=True)]


def _clamp_strength(strength: float | str, acts: torch.Tensor) -> float | str | list[float]:
    """The steering strength as `steering_effect` takes it: "auto" becomes one value per feature,
    AUTO_STRENGTH x its largest activation in `acts` ([n_images, n_tokens, n_features]; 1 where it never
    fires); a number or "relative" passes through."""
    if strength == "auto":
        peak = torch.nan_to_num(acts, nan=0.0).amax(dim=(0, 1))
        return [AUTO_STRENGTH * float(p) if p > 0 else 1.0 for p in peak]
    if isinstance(strength, str) and strength != "relative":
        raise ValueError(f"strength must be a number, 'auto' or 'relative', got {strength!r}")
    return strength


def _feature_data(
    hook_name: str,
    feature: int,
    acts: torch.Tensor,
    positions: list[int],
    shown: np.ndarray,
    n_top: int,
    steering: dict[str, Any],
    label: str,
    direct_readout: list[tuple[str, float]],
) -> FeatureData:
    """One feature's panel from its activations `acts` [n_images, n_tokens] (NaN where the SAE does not read)
    and the images as shown; the statistics are over the token positions the SAE reads."""
    n_images, n_tokens = acts.shape
    has_cls, has_patches = 0 in positions, any(p > 0 for p in positions)
    read = acts[:, positions].reshape(-1).numpy()
    return FeatureData(
        feature=feature,
        hook_name=hook_name,
        top=top_images_for(acts, shown, n_tokens, n_top, has_patches, has_cls),
        activations=read,
        n_tokens_seen=int(read.size),
        n_images=n_images,
        density=float((read > 0).mean()),
        max_activation=float(read.max()),
        steering=steering,
        label=label,
        direct_readout=direct_readout,
    )


def collect_dashboard_data(
    model: HookedViT,
    sae: Any,
    images: Any,
    features: Sequence[int],
    *,
    n_top: int = 6,
    vocabulary: Any = "toy",
    strength: float | str = 150.0,
    n_steer_images: int = 32,
    steer: bool = True,
    labels: Sequence[str] | None = None,
    batch_size: int = 64,
    title: str = "",
    beyond_random: bool = True,
) -> DashboardData:
    """Gather the dashboard of `features` of `sae` over `images` (tensor, list of PIL images or dataset).

    steer: also measure the steering effect on the first `n_steer_images` images over `vocabulary`.
    strength: the clamp value (the paper's 150), "auto": AUTO_STRENGTH x the feature's largest
        activation on these images, a push a few times beyond its natural range whatever the model's scale, or
        "relative": the steerability metric's model-relative default (`analysis.steering_strength`).
    labels: one free-text note per feature (e.g. "most steerable").
    beyond_random: concepts gained / lost beyond random directions of the same norm (`steering_effect`).
    """
    from sae_clip_plugin.model.sae_splice import sae_token_positions  # lazy: sae_lens

    features = _checked_features(features, sae.cfg.d_sae, labels)
    pixels = as_pixels(model, images)
    n_tokens = model.cfg.n_tokens
    positions = sae_token_positions(sae, n_tokens)
    acts = feature_activations(model, sae, pixels, features, batch_size)
    shown = display_images(pixels, getattr(model.cfg, "preprocess", None))
    strength = _clamp_strength(strength, acts)
    text = None
    if getattr(model, "text", None) is not None:  # the vocabulary is embedded once, for steering and readouts
        vocabulary = load_vocabulary(vocabulary)
        text = text_embeddings(model, vocabulary)
    effects = (
        steering_effect(
            model,
            sae,
            pixels[:n_steer_images],
            features,
            vocabulary,
            strength,
            text=text,
            beyond_random=beyond_random,
        )
        if steer
        else [{} for _ in features]
    )
    readouts = decoder_readouts(model, sae, features, vocabulary, text=text)
    measures = card_measures(acts, pixels, getattr(model.cfg, "preprocess", None), positions)
    meta = sae.cfg.metadata
    notes = labels if labels is not None else [""] * len(features)
    out = [
        _feature_data(
            meta.hook_name, feature, acts[:, :, j], positions, shown, n_top, effects[j], notes[j], readouts[j]
        )
        for j, feature in enumerate(features)
    ]
    for data, values in zip(out, measures, strict=True):
        data.measures = values
    return DashboardData(
        hook_name=meta.hook_name,
        model_spec=meta.get("model_name") or model.cfg.model_spec,
        d_sae=int(sae.cfg.d_sae),
        token_selection=meta.get("token_selection") or "all",
        patch_side=patch_side(n_tokens),
        n_images=len(pixels),
        features=out,
        title=title or f"SAE features at {meta.hook_name}",
        info={"architecture": sae.cfg.architecture(), "n_top": n_top},
    )
