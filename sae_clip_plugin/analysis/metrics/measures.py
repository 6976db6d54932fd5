"""The field's vision-SAE measures over a stream of images, for `evaluate_sae` and for any encoder on its own.

Monosemanticity (monosemanticity.py), localisation (localisation.py) and sparse probing (sparse_probing.py) read
the features of each batch once: per-image codes are the features max-pooled over the tokens the SAE acts on
(ViSAEBench's image code), patch maps are the features at the patch tokens. Scalars are means over the features
whose score is defined; ViSAEBench averages a random subsample of at most 1000 (monosemanticity) / 500
(localisation) of them, which estimates the same mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sae_clip_plugin.analysis.metrics.discrimination import mean_interval
from sae_clip_plugin.analysis.metrics.localisation import LocalisationStats
from sae_clip_plugin.analysis.metrics.monosemanticity import MonosemanticityStats, top_n_of
from sae_clip_plugin.analysis.metrics.sparse_probing import K_VALUES, f_statistic, sparse_probing_auc

MEASURES = ("monosemanticity", "localisation", "sparse_probing")
ARRAY_KEYS = ("ms_by_feature", "moran_by_feature", "f_by_feature")


@dataclass
class MeasureSettings:
    """Which measures to take and their settings (defaults: ViSAEBench's)."""

    measures: Sequence[str] = MEASURES
    ms_variant: str = "top16"
    second_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None  # pixels -> [B, E]
    k_values: Sequence[int] = K_VALUES
    test_size: float = 0.2
    seed: int = 42
    min_active: int = 5
    max_active_fraction: float = 0.9
    min_images: int = 50
    max_images: int = 200

    def __post_init__(self) -> None:
        unknown = sorted(set(self.measures) - set(MEASURES))
        if unknown:
            raise ValueError(f"unknown measure(s) {unknown}; choose from {', '.join(MEASURES)}")
        top_n_of(self.ms_variant)
        if "monosemanticity" in self.measures and self.second_encoder is None:
            raise ValueError("the monosemanticity score needs a second image encoder; pass second_encoder= "
                             "(e.g. measures.second_encoder('pixels', model)) or --ms-encoder")  # fmt: skip


class VisionMeasureStats:
    """Feed each batch's features at every token; `result()` gives the scalars and the per-feature arrays."""

    def __init__(
        self, d_sae: int, positions: Sequence[int], n_tokens: int, settings: MeasureSettings
    ) -> None:
        self.settings, self.positions = settings, list(positions)
        want = set(settings.measures)
        self.ms = MonosemanticityStats(d_sae, settings.ms_variant) if "monosemanticity" in want else None
        patches_read = set(range(1, n_tokens)) <= set(self.positions)
        self.loc = None
        if "localisation" in want and patches_read:
            self.loc = LocalisationStats(d_sae, None, settings.min_active, settings.max_active_fraction,
                                         settings.min_images, settings.max_images)  # fmt: skip
        self.codes: list[torch.Tensor] | None = [] if "sparse_probing" in want else None
        self.labels: list[torch.Tensor] = []

    def add(self, feats: torch.Tensor, pixels: torch.Tensor, labels: torch.Tensor | None) -> None:
        """feats [B, n_tokens, F] (read at the SAE's positions), the batch's pixels, its labels (or None)."""
        feats = feats.detach()
        codes = feats[:, self.positions].amax(1).float().cpu()
        if self.ms is not None:
            self.ms.add(codes, self.settings.second_encoder(pixels))  # type: ignore[misc]
        if self.loc is not None:
            self.loc.add(feats[:, 1:].float())
        if self.codes is not None:
            self.codes.append(codes)
            if labels is not None:
                self.labels.append(torch.as_tensor(labels).reshape(-1).cpu())

    def result(self) -> dict[str, Any]:
        """`ms_<variant>`, `localisation`, `sparse_probing_auc` and `probe_acc_k<k>` (NaN when not measurable),
        with the arrays `ms_by_feature`, `moran_by_feature`, `f_by_feature` of the measures taken."""
        out: dict[str, Any] = {}
        if self.ms is not None:
            per = self.ms.result()
            _mean_into(out, f"ms_{self.settings.ms_variant}", per)
            out["ms_by_feature"] = per.numpy()
        if "localisation" in self.settings.measures:
            per = self.loc.result() if self.loc is not None else None
            if per is not None:
                _mean_into(out, "localisation", per)
                out["moran_by_feature"] = per.numpy()
            else:
                out["localisation"] = float("nan")
        if self.codes is not None:
            out.update(self._probing())
        return out

    def _probing(self) -> dict[str, Any]:
        codes = torch.cat(self.codes) if self.codes else torch.empty(0)
        labels = torch.cat(self.labels) if self.labels else None
        if labels is None or len(labels) != len(codes) or len(torch.unique(labels)) < 2:
            return {"sparse_probing_auc": float("nan")}
        s = self.settings
        auc, accs = sparse_probing_auc(codes, labels, s.k_values, s.test_size, s.seed)
        out: dict[str, Any] = {"sparse_probing_auc": auc, **{f"probe_acc_k{k}": a for k, a in accs.items()}}
        out["f_by_feature"] = f_statistic(codes, labels).numpy()
        return out


def _mean(per_feature: torch.Tensor) -> float:
    ok = ~per_feature.isnan()
    return float(per_feature[ok].mean()) if ok.any() else float("nan")


def _mean_into(out: dict[str, Any], key: str, per_feature: torch.Tensor) -> None:
    """`key` = the mean over the measurable features, `key_lo` / `key_hi` its 95% bootstrap interval over them."""
    out[key] = _mean(per_feature)
    out[f"{key}_lo"], out[f"{key}_hi"] = mean_interval(per_feature.numpy())


@torch.no_grad()
def vision_measures(
    model: Any,
    encoder: Any,
    images: Any,
    settings: MeasureSettings,
    hook: str | None = None,
    batch_size: int = 64,
    max_images: int | None = None,
) -> dict[str, Any]:
    """The measures of `encoder` (an sae_lens SAE, or anything with `encode`, e.g. `controls.NeuronBasis`) at its
    hook of `model` over `images` (any source `iter_image_batches` reads). An SAE reads its own token positions;
    another encoder reads every token."""
    from sae_clip_plugin.analysis.pixels import iter_image_batches
    from sae_clip_plugin.model.device import model_device
    from sae_clip_plugin.model.hooks import stop_layer
    from sae_clip_plugin.model.sae_splice import sae_token_positions

    cfg = getattr(encoder, "cfg", None)
    hook = hook or (cfg.metadata.hook_name if cfg is not None else None)
    if not hook:
        raise ValueError("pass hook= (the encoder has no metadata.hook_name)")
    n_tokens = model.cfg.n_tokens
    positions = sae_token_positions(encoder, n_tokens) if cfg is not None else list(range(n_tokens))
    stats: VisionMeasureStats | None = None
    device = model_device(model)
    for batch in iter_image_batches(images, batch_size, transform=model.preprocess, max_images=max_images):
        _, cache = model.run_with_cache(
            batch.pixels.to(device), names_filter=[hook], stop_at_layer=stop_layer(hook)
        )
        feats = encoder.encode(cache[hook].to(encoder.W_enc.dtype))
        stats = stats or VisionMeasureStats(feats.shape[-1], positions, n_tokens, settings)
        stats.add(feats, batch.pixels, batch.labels)
    if stats is None:
        raise ValueError("the image source yielded no images")
    return stats.result()
