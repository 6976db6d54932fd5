"""The one definition of an SAE's reconstruction and sparsity numbers, as float64 running sums.

The checkpoint evaluation (training/evaluate.py) and `sae-clip eval` (analysis/metrics) both add their
batches here, so the training log and the evaluation report cannot disagree. Definitions, per group of tokens:
- explained variance = 1 - FVU, FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 with the group's own mean;
- MSE = mean over tokens of ||x - x_hat||^2 (summed over d_in, as sae_lens' evals);
- cosine = mean over tokens of cos(x, x_hat) along d_in; L2 ratio = mean over tokens of ||x_hat|| / ||x||
  (an input norm below 1e-4 counts as 1, as sae_lens);
- L0 = mean number of non-zero features per token; L1 = mean sum |f| per token;
- feature density = fraction of the tokens on which the feature is non-zero; dead = never non-zero.
Top-level (torch and numpy only) so that every layer may import it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NAN = float("nan")
RECONSTRUCTION_KEYS = ("explained_variance", "fvu", "mse", "cos_sim", "l2_ratio")


class ReconstructionStats:
    """Sums for explained variance / FVU / MSE / cosine / L2 ratio over one group of tokens."""

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

    def metrics(self) -> dict[str, float]:
        """RECONSTRUCTION_KEYS -> value; all NaN before any token."""
        if self.n == 0:
            return dict.fromkeys(RECONSTRUCTION_KEYS, NAN)
        total_var = self.sum_sq - float(self.sum_x.pow(2).sum()) / self.n  # sum ||x - mean||^2
        fvu = self.sse / total_var if total_var > 0 else NAN
        return {
            "explained_variance": 1.0 - fvu,
            "fvu": fvu,
            "mse": self.sse / self.n,
            "cos_sim": self.cos_sum / self.n,
            "l2_ratio": self.l2_ratio_sum / self.n,
        }

    def result(self, suffix: str) -> dict[str, float]:
        """`metrics` with `_{suffix}` on each key (the token group's name)."""
        return {f"{key}_{suffix}": value for key, value in self.metrics().items()}


class FeatureStats:
    """Sums for L0 / L1 per token and firing counts per feature over one group of tokens."""

    def __init__(self, d_sae: int) -> None:
        self.n = 0
        self.l0_sum = 0.0
        self.l1_sum = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)

    def add(self, feats: torch.Tensor) -> None:
        """feats: [..., d_sae], one row per token."""
        active = feats != 0
        fires = active.reshape(-1, active.shape[-1]).sum(0)
        self.add_counts(active.sum(-1), feats.double().abs().sum(-1), fires)

    def add_counts(self, l0: torch.Tensor, l1: torch.Tensor, fires: torch.Tensor | None = None) -> None:
        """Counts already reduced over the features: L0 and L1 per token (any shape), and the batch's
        firing count per feature, if this group keeps them. For callers that also need them by position."""
        self.n += l0.numel()
        self.l0_sum += float(l0.double().sum())
        self.l1_sum += float(l1.double().sum())
        if fires is not None:
            self.fires += fires.double().cpu()

    def metrics(self) -> dict[str, float]:
        """l0, l1 per token; NaN before any token."""
        if self.n == 0:
            return {"l0": NAN, "l1": NAN}
        return {"l0": self.l0_sum / self.n, "l1": self.l1_sum / self.n}

    def density(self) -> np.ndarray:
        """Per feature, the fraction of tokens it fired on [d_sae]; NaN before any token."""
        if self.n == 0:
            return np.full(self.fires.shape, NAN)
        return (self.fires / self.n).numpy()

    def dead_fraction(self) -> float:
        """Fraction of features that never fired; NaN before any token."""
        return float((self.fires == 0).double().mean()) if self.n else NAN
