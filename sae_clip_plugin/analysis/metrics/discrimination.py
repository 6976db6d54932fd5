"""Whether a measure tells a trained SAE from its controls: bootstrap intervals of mean differences.

A measure's score of an SAE is the mean over its features (or one number per run, e.g. sparse-probing AUC per
probe split); a control (a random SAE of the same shape, `controls.random_sae_like`) is drawn over several seeds.
The interval resamples the seeds, then the features within each drawn seed, so it covers both the choice of
features and the choice of random initialisation. NaN scores (dead or unmeasurable features) are dropped first,
as ViSAEBench scores only the features it can measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOTSTRAP = 2000
LEVEL = 0.95


def _clean(runs: Sequence[np.ndarray | float]) -> list[np.ndarray]:
    out = [np.asarray(r, dtype=np.float64).reshape(-1) for r in runs]
    out = [r[~np.isnan(r)] for r in out]
    out = [r for r in out if r.size]
    if not out:
        raise ValueError("no defined scores: every run was empty or NaN")
    return out


def _draws(runs: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot] bootstrap means: seeds resampled, then features within each drawn seed."""
    picks = rng.integers(len(runs), size=(n_boot, len(runs)))
    out = np.empty(n_boot)
    for b in range(n_boot):
        means = [runs[s][rng.integers(runs[s].size, size=runs[s].size)].mean() for s in picks[b]]
        out[b] = np.mean(means)
    return out


@dataclass
class Difference:
    """mean(a) - mean(b) with its bootstrap interval; `separates` when the interval excludes 0 on a's side."""

    a: float
    b: float
    diff: float
    lo: float
    hi: float

    @property
    def separates(self) -> bool:
        return self.lo > 0


def mean_difference(
    a: Sequence[np.ndarray | float],
    b: Sequence[np.ndarray | float],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
) -> Difference:
    """Difference of means of two conditions, each a list of runs (seeds) of per-feature scores (or scalars).

    The point estimates are the means over runs of each run's mean; the interval is the central `level` range of
    the bootstrap differences (a and b resampled independently: their features do not correspond).
    """
    ra, rb = _clean(a), _clean(b)
    rng = np.random.default_rng(seed)
    da, db = _draws(ra, n_boot, rng), _draws(rb, n_boot, rng)
    tail = (1 - level) / 2
    lo, hi = np.quantile(da - db, [tail, 1 - tail])
    ma, mb = float(np.mean([r.mean() for r in ra])), float(np.mean([r.mean() for r in rb]))
    return Difference(ma, mb, ma - mb, float(lo), float(hi))


def mean_interval(
    values: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """The bootstrap `level` interval of the mean of one SAE's per-feature scores (NaN dropped; (NaN, NaN) when
    none is defined): how much the reported mean depends on which features the SAE happened to have."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if not v.size:
        return float("nan"), float("nan")
    draws = v[np.random.default_rng(seed).integers(v.size, size=(n_boot, v.size))].mean(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return float(lo), float(hi)


def best_auroc(codes: np.ndarray, labels: Sequence[object]) -> dict[str, float]:
    """Per planted value, the highest single-feature ROC AUC of `codes` [N, F] for "image has this value".

    Why: a dictionary that learnt the world's concepts has a feature that detects each planted value alone.
    Values seen on fewer than 5 images, and images without a value (None), are skipped.
    """
    labels = list(labels)
    out: dict[str, float] = {}
    for value in sorted({str(v) for v in labels if v is not None}):
        y = np.array([v is not None and str(v) == value for v in labels])
        if y.sum() < 5 or (~y).sum() < 5:
            continue
        out[value] = float(_auroc_columns(codes, y).max())
    return out


def _auroc_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of x as a score for the boolean y (ties count one half), via mean ranks."""
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    order = np.argsort(x, axis=0, kind="mergesort")
    ranks = np.empty_like(x, dtype=np.float64)
    cols = np.arange(x.shape[1])
    ranks[order, cols] = np.arange(1, x.shape[0] + 1, dtype=np.float64)[:, None]
    # average the ranks of ties, column by column
    for j in range(x.shape[1]):
        _, inverse, counts = np.unique(x[:, j], return_inverse=True, return_counts=True)
        if counts.max() > 1:
            sums = np.bincount(inverse, weights=ranks[:, j])
            ranks[:, j] = (sums / counts)[inverse]
    return (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
