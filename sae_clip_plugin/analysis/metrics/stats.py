"""The accumulators behind `evaluate_sae`: reconstruction, sparsity by token group and position, downstream.

Each `add` takes one batch; `result` turns the sums into metrics. The reconstruction and per-token sparsity
sums and their definitions are the shared ones of `sae_clip_plugin.streaming_stats` (the checkpoint
evaluation in training uses the same, so the two reports agree); what is added here is specific to analysis:
token groups by position, L0 per position and as a patch grid, dense features, downstream cost, `recovered`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sae_clip_plugin.analysis.zero_shot import ZeroShotAccumulator, kl_divergence
from sae_clip_plugin.streaming_stats import NAN, FeatureStats, ReconstructionStats

__all__ = [
    "GROUPS",
    "NAN",
    "VARIANTS",
    "DownstreamStats",
    "FeatureStats",
    "ReconstructionStats",
    "SparsityStats",
    "patch_grid",
    "recovered",
    "token_groups",
]

GROUPS = ("all", "cls", "patches")


def token_groups(positions: list[int]) -> dict[str, list[int]]:
    """Indices into `positions` (the SAE's token positions) of each group: all, cls (position 0), patches."""
    groups = {"all": list(range(len(positions)))}
    cls = [i for i, p in enumerate(positions) if p == 0]
    patches = [i for i, p in enumerate(positions) if p != 0]
    if cls:
        groups["cls"] = cls
    if patches:
        groups["patches"] = patches
    return groups


class SparsityStats:
    """L0 / L1 by token group (`FeatureStats` each), L0 per token position, per-feature firing counts."""

    def __init__(self, positions: list[int], n_tokens: int, d_sae: int) -> None:
        self.positions = positions
        self.n_tokens = n_tokens
        self.groups = token_groups(positions)
        self.n_images = 0
        self.by_group = {name: FeatureStats(d_sae) for name in self.groups}  # firing counts in "all" only
        self.l0_by_pos = torch.zeros(len(positions), dtype=torch.float64)

    def add(self, feats: torch.Tensor) -> None:
        """feats: [images, len(positions), d_sae] at the SAE's positions."""
        active = feats != 0
        l0 = active.sum(-1).double().cpu()  # [images, positions]
        l1 = feats.double().abs().sum(-1).cpu()
        fires = active.reshape(-1, active.shape[-1]).sum(0)
        self.n_images += feats.shape[0]
        self.l0_by_pos += l0.sum(0)
        for name, idx in self.groups.items():
            self.by_group[name].add_counts(l0[:, idx], l1[:, idx], fires if name == "all" else None)

    def result(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in GROUPS:
            sums = self.by_group.get(name, FeatureStats(0)).metrics()  # NaN for a group the SAE skips
            out.update({f"{key}_{name}": value for key, value in sums.items()})
        every = self.by_group["all"]
        density = every.density()
        by_pos = np.full(self.n_tokens, NAN)
        if self.n_images:
            by_pos[self.positions] = (self.l0_by_pos / self.n_images).numpy()
        out.update(
            dead_fraction=every.dead_fraction(),
            dense_fraction_10=float((density > 0.1).mean()) if every.n else NAN,
            dense_fraction_50=float((density > 0.5).mean()) if every.n else NAN,
            dead_window_images=self.n_images,
            dead_window_tokens=every.n,
            l0_by_position=by_pos,
            l0_patch_grid=patch_grid(by_pos) if _is_square(self.n_tokens - 1) else None,
            feature_density=density,
        )
        return out


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def patch_grid(by_position: np.ndarray) -> np.ndarray:
    """Per-token values [n_tokens] (CLS first, patches row-major) -> the patches as a square grid."""
    n_patches = len(by_position) - 1
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"{n_patches} patch tokens do not form a square grid")
    return np.asarray(by_position[1:], dtype=np.float64).reshape(side, side)


VARIANTS = ("clean", "spliced", "spliced_err", "zero_abl", "mean_abl")


class DownstreamStats:
    """Zero-shot top-1 / CE per model variant, KL and final-embedding cosine of each variant vs clean."""

    def __init__(self) -> None:
        self.zs = {v: ZeroShotAccumulator() for v in VARIANTS}
        self.kl_sum = dict.fromkeys(VARIANTS[1:], 0.0)
        self.cos_sum = dict.fromkeys(VARIANTS[1:], 0.0)
        self.n = 0
        self.n_kl = 0

    def add(
        self,
        embeds: dict[str, torch.Tensor],
        logits: dict[str, torch.Tensor] | None,
        labels: torch.Tensor | None,
    ) -> None:
        clean = embeds["clean"].double()
        self.n += clean.shape[0]
        for v in VARIANTS[1:]:
            self.cos_sum[v] += float(F.cosine_similarity(embeds[v].double(), clean, dim=-1).sum())
        if logits is None:
            return
        self.n_kl += clean.shape[0]
        for v in VARIANTS[1:]:
            self.kl_sum[v] += float(kl_divergence(logits["clean"], logits[v]).sum())
        if labels is not None:
            for v in VARIANTS:
                self.zs[v].add(logits[v], labels)

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for v in VARIANTS:
            r = self.zs[v].result()
            out[f"top1_{v}"], out[f"ce_{v}"] = r["top1"], r["ce"]
        for metric in ("ce", "top1"):
            clean, spliced = out[f"{metric}_clean"], out[f"{metric}_spliced"]
            for abl in ("zero", "mean"):
                out[f"{metric}_recovered_{abl}"] = recovered(
                    out[f"{metric}_{abl}_abl"], spliced, clean, higher_is_better=metric == "top1"
                )
        for v in VARIANTS[1:]:
            out[f"embed_cos_{v}"] = self.cos_sum[v] / self.n if self.n else NAN
            out[f"kl_{v}"] = self.kl_sum[v] / self.n_kl if self.n_kl else NAN
        return out


def recovered(ablated: float, spliced: float, clean: float, higher_is_better: bool = False) -> float:
    """(ablated - spliced) / (ablated - clean): 1 = the splice loses nothing, 0 = as bad as ablating.

    NaN (undefined, not a number to read) unless ablating the hook makes the metric worse than clean: when mean
    ablation is as good as or better than the model itself, there is no loss for the splice to recover.
    """
    denom = ablated - clean
    worse = denom < 0 if higher_is_better else denom > 0
    if not math.isfinite(denom) or not worse or abs(denom) <= 1e-9 * max(1.0, abs(clean)):
        return NAN
    return (ablated - spliced) / denom
