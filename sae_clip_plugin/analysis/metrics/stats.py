"""Streaming float64 accumulators behind `evaluate_sae`: reconstruction, sparsity, downstream.

Each `add` takes one batch; `result` turns the sums into metrics. Definitions (per token group):
- FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 with the group's data-set mean,
  explained variance = 1 - FVU;
- MSE = mean over tokens of ||x - x_hat||^2 (summed over d_in, as sae_lens' evals);
- cosine = mean over tokens of cos(x, x_hat) along d_in; L2 ratio = mean over tokens of ||x_hat|| / ||x||
  (an input norm below 1e-4 counts as 1, as sae_lens);
- L0 = mean number of non-zero features per token; L1 = mean sum |f| per token;
- feature density = fraction of evaluated tokens on which the feature is non-zero.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sae_clip_plugin.analysis.zero_shot import ZeroShotAccumulator, kl_divergence

NAN = float("nan")
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


class ReconstructionStats:
    """Sums for FVU / MSE / cosine / L2 ratio over one group of tokens."""

    def __init__(self, d_in: int) -> None:
        self.n = 0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_sq = 0.0
        self.sse = 0.0
        self.cos_sum = 0.0
        self.l2_ratio_sum = 0.0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """x, x_hat: [tokens, d_in]."""
        x, x_hat = x.double(), x_hat.double()
        self.n += x.shape[0]
        self.sum_x += x.sum(0).cpu()
        self.sum_sq += float(x.pow(2).sum())
        self.sse += float((x - x_hat).pow(2).sum())
        self.cos_sum += float(F.cosine_similarity(x, x_hat, dim=-1, eps=1e-12).sum())
        norm_in = x.norm(dim=-1)
        norm_in = torch.where(norm_in.abs() < 1e-4, torch.ones_like(norm_in), norm_in)
        self.l2_ratio_sum += float((x_hat.norm(dim=-1) / norm_in).sum())

    def result(self, suffix: str) -> dict[str, float]:
        if self.n == 0:
            return {f"{k}_{suffix}": NAN for k in ("explained_variance", "fvu", "mse", "cos_sim", "l2_ratio")}
        total_var = self.sum_sq - float(self.sum_x.pow(2).sum()) / self.n  # sum ||x - mean||^2
        fvu = self.sse / total_var if total_var > 0 else NAN
        return {
            f"explained_variance_{suffix}": 1.0 - fvu,
            f"fvu_{suffix}": fvu,
            f"mse_{suffix}": self.sse / self.n,
            f"cos_sim_{suffix}": self.cos_sum / self.n,
            f"l2_ratio_{suffix}": self.l2_ratio_sum / self.n,
        }


class SparsityStats:
    """L0 / L1 by token group, L0 per token position, per-feature firing counts."""

    def __init__(self, positions: list[int], n_tokens: int, d_sae: int) -> None:
        self.positions = positions
        self.n_tokens = n_tokens
        self.groups = token_groups(positions)
        self.n_images = 0
        self.l0_sum = dict.fromkeys(self.groups, 0.0)
        self.l1_sum = dict.fromkeys(self.groups, 0.0)
        self.l0_by_pos = torch.zeros(len(positions), dtype=torch.float64)
        self.fires = torch.zeros(d_sae, dtype=torch.float64)

    def add(self, feats: torch.Tensor) -> None:
        """feats: [images, len(positions), d_sae] at the SAE's positions."""
        active = feats != 0
        l0 = active.sum(-1).double().cpu()  # [images, positions]
        l1 = feats.double().abs().sum(-1).cpu()
        self.n_images += feats.shape[0]
        self.l0_by_pos += l0.sum(0)
        for name, idx in self.groups.items():
            self.l0_sum[name] += float(l0[:, idx].sum())
            self.l1_sum[name] += float(l1[:, idx].sum())
        self.fires += active.reshape(-1, active.shape[-1]).sum(0).double().cpu()

    def result(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in GROUPS:
            n_tok = self.n_images * len(self.groups.get(name, []))
            out[f"l0_{name}"] = self.l0_sum[name] / n_tok if n_tok else NAN
            out[f"l1_{name}"] = self.l1_sum[name] / n_tok if n_tok else NAN
        n_tok = self.n_images * len(self.positions)
        density = (self.fires / n_tok).numpy() if n_tok else np.full(self.fires.shape, NAN)
        by_pos = np.full(self.n_tokens, NAN)
        if self.n_images:
            by_pos[self.positions] = (self.l0_by_pos / self.n_images).numpy()
        out.update(
            dead_fraction=float((self.fires == 0).double().mean()) if n_tok else NAN,
            dense_fraction_10=float((density > 0.1).mean()) if n_tok else NAN,
            dense_fraction_50=float((density > 0.5).mean()) if n_tok else NAN,
            dead_window_images=self.n_images,
            dead_window_tokens=n_tok,
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
                out[f"{metric}_recovered_{abl}"] = recovered(out[f"{metric}_{abl}_abl"], spliced, clean)
        for v in VARIANTS[1:]:
            out[f"embed_cos_{v}"] = self.cos_sum[v] / self.n if self.n else NAN
            out[f"kl_{v}"] = self.kl_sum[v] / self.n_kl if self.n_kl else NAN
        return out


def recovered(ablated: float, spliced: float, clean: float) -> float:
    """(ablated - spliced) / (ablated - clean): 1 = the splice loses nothing, 0 = as bad as ablating."""
    denom = ablated - clean
    if not math.isfinite(denom) or denom == 0:
        return NAN
    return (ablated - spliced) / denom
