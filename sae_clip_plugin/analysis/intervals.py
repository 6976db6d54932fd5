"""Confidence intervals for accuracies and for paired accuracy differences (stratified bootstrap).

With 48 images per group one image moves a group accuracy by about 2 points, so every accuracy and every
difference between two interventions on the same images is reported with a 95% interval. The bootstrap
resamples images within each group (group sizes stay fixed, as in the experiment) and applies the same
resample to both conditions of a difference, so the interval of a paired difference is as narrow as the
pairing makes it. Correctness may be fractional, or one row per random-feature seed ([seeds, N]): then each
draw's metric is the mean over seeds of the seed's metric, the same statistic as the reported mean over seeds
(for worst-group accuracy the mean of the seeds' minima, not the minimum of their mean).
"""

from __future__ import annotations

import torch

N_BOOTSTRAP = 1000
LEVEL = 0.95
METRICS = ("top1", "worst_group_acc", "mean_group_acc", "clean_acc", "attacked_acc")


def _resample(groups: torch.Tensor, n_boot: int, seed: int) -> list[torch.Tensor]:
    """Per group, [n_boot, group size] indices into the images (drawn with replacement within the group)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for g in torch.unique(groups):
        members = torch.nonzero(groups == g).flatten()
        out.append(members[torch.randint(len(members), (n_boot, len(members)), generator=gen)])
    return out


def _metrics(correct: torch.Tensor, draws: list[torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Each metric of `METRICS` on every bootstrap draw ([n_boot] each); `correct` is [N] or [seeds, N]
    (then the metric of each seed, averaged over seeds)."""
    rows = correct if correct.dim() == 2 else correct.unsqueeze(0)
    per_group = torch.stack([rows[:, idx].mean(-1) for idx in draws], dim=-1)  # [seeds, n_boot, G]
    sizes = torch.tensor([idx.shape[1] for idx in draws], dtype=per_group.dtype)
    out = {
        "top1": (per_group * sizes).sum(-1) / sizes.sum(),
        "worst_group_acc": per_group.min(-1).values,
        "mean_group_acc": per_group.mean(-1),
    }
    if kind == "typographic" and per_group.shape[-1] >= 2:
        out["clean_acc"], out["attacked_acc"] = per_group[..., 0], per_group[..., 1]
    return {key: value.mean(0) for key, value in out.items()}


def _bounds(samples: torch.Tensor) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2
    q = torch.quantile(samples.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(q[0]), float(q[1])


def bootstrap_intervals(
    correct: torch.Tensor,
    groups: torch.Tensor,
    kind: str,
    baseline: torch.Tensor | None = None,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, float]:
    """`{metric}_lo/_hi` for each metric, and `delta_{metric}_lo/_hi` against `baseline` (same images).

    `correct` and `baseline` are per-image correctness ([N], 0/1 or fractional, or [seeds, N] for a condition
    repeated over random seeds); `groups` [N] the group ids (typographic tasks: 0 clean, 1 attacked).
    """
    draws = _resample(groups.cpu(), n_boot, seed)
    ours = _metrics(correct.double().cpu(), draws, kind)
    out: dict[str, float] = {}
    for key, samples in ours.items():
        out[f"{key}_lo"], out[f"{key}_hi"] = _bounds(samples)
    if baseline is not None:
        theirs = _metrics(baseline.double().cpu(), draws, kind)
        for key, samples in ours.items():
            out[f"delta_{key}_lo"], out[f"delta_{key}_hi"] = _bounds(samples - theirs[key])
    return out


def difference_interval(
    a: torch.Tensor, b: torch.Tensor, groups: torch.Tensor, kind: str, metric: str, *, seed: int = 0
) -> tuple[float, float]:
    """95% interval of metric(a) - metric(b) for two conditions on the same images."""
    found = bootstrap_intervals(a, groups, kind, b, seed=seed)
    return found[f"delta_{metric}_lo"], found[f"delta_{metric}_hi"]
