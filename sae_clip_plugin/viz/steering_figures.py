"""Figures for steering: S against strength per feature (steering curves), and S vs P per feature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from sae_clip_plugin.atomic import atomic_write_text
from sae_clip_plugin.viz.metrics_figures import save_figure


def _pyplot() -> Any:
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=False)
    # here, not at module level: pyplot fixes its backend on import (set above)
    import matplotlib.pyplot as plt

    return plt


def plot_steering_curves(
    curves: pd.DataFrame, threshold: float | None = 0.10, ax: Any = None, max_features: int = 12
) -> Any:
    """Steerability S against strength, one line per feature (from `steering_curves`), labelled by the
    top concept at the largest strength; a dashed line marks the steerable threshold."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for feature, group in list(curves.groupby("feature", sort=False))[:max_features]:
        group = group.sort_values("strength")
        label = f"{feature}: {group['top_concept'].iloc[-1]}"
        ax.plot(group["strength"], group["S"], marker="o", ms=3, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("steering strength s")
    ax.set_ylabel("steerability S")
    ax.legend(fontsize=7, ncol=2)
    ax.figure.tight_layout()
    return ax.figure


def plot_steerability_scatter(
    tables: dict[str, pd.DataFrame], threshold: float | None = 0.10, ax: Any = None
) -> Any:
    """S vs P per feature for several runs (e.g. {"SAE": ..., "neurons": ..., "random model": ...})."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    for name, table in tables.items():
        frac = table["steerable"].mean() if len(table) else 0.0
        ax.scatter(table["P"], table["S"], s=8, alpha=0.6, label=f"{name} ({100 * frac:.0f}% steerable)")
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=1)
    ax.set_xlabel("steering power P = max delta_bar")
    ax.set_ylabel("steerability S = sum delta_bar^2")
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure


def save_steering_curves(curves: Any, out: Path, prefix: str, threshold: float) -> dict[str, Path]:
    """<prefix>_curves.csv and <prefix>_curves.png (S against strength per feature) in `out`."""
    csv = out / f"{prefix}_curves.csv"
    atomic_write_text(csv, curves.to_csv(index=False))
    png = out / f"{prefix}_curves.png"
    fig = plot_steering_curves(curves, threshold)
    save_figure(fig, png, dpi=120)
    return {"curves": csv, "curves_figure": png}
