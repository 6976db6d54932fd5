"""Disentanglement figure: zero-shot accuracy by layer with SAE-feature suppression, random features and baselines.

PNG through matplotlib's Agg canvas (pyplot's global state is never touched). Input: the rows of
`analysis.disentangle_eval.run_disentangle` (evaluation split). At each layer the k shown is the one
chosen on the selection split for that layer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sae_clip_plugin.viz.metrics_figures import save_figure

Row = Mapping[str, Any]


def _metrics(kind: str) -> list[tuple[str, str, str]]:
    """(metric key, label, line style) pairs shown for a task kind."""
    if kind == "typographic":
        return [("attacked_acc", "attacked", "-"), ("clean_acc", "clean", "--")]
    return [("worst_group_acc", "worst group", "-"), ("mean_group_acc", "mean over groups", "--")]


def _value(row: Row | None, key: str) -> float:
    """The row's accuracy in percent (NaN when missing)."""
    v = None if row is None else row.get(key)
    return 100 * float(v) if v is not None and math.isfinite(float(v)) else float("nan")


def plot_accuracy_by_layer(
    rows: Sequence[Row],
    kind: str,
    k_per_layer: Mapping[int, int] | None = None,
    heads: str | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Accuracy (eval split) against the layer of the SAE whose features are suppressed.

    Lines: suppression of the selected features (colour), k random features (grey); horizontal
    lines: no intervention (black, drawn on top: at 0% it would hide under the others) and head ablation
    (orange; `heads` picks the ablated set shown, e.g. the one chosen on the selection split, default the first).
    Accuracies in percent, like the tables.
    """
    rows = [r for r in rows if r.get("split", "eval") == "eval"]
    fig = Figure(figsize=(8.8, 4.2), dpi=110)  # the legend sits right of the axes, off the data
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    layers = sorted({int(r["layer"]) for r in rows if r["condition"] == "sae" and r.get("layer") is not None})
    k_per_layer = {int(k): int(v) for k, v in (k_per_layer or {}).items()}

    def at(condition: str, layer: int) -> Row | None:
        cands = [r for r in rows if r["condition"] == condition and r.get("layer") == layer]
        if not cands:
            return None
        want = k_per_layer.get(layer)
        same_k = [r for r in cands if r.get("k") == want]
        return (same_k or cands)[0]

    none = next((r for r in rows if r["condition"] == "none"), None)
    head_rows = [r for r in rows if r["condition"] == "heads"]
    head_row = next((r for r in head_rows if r.get("heads") == heads), head_rows[0] if head_rows else None)
    for key, label, style in _metrics(kind):
        if layers:
            ax.plot(layers, [_value(at("sae", L), key) for L in layers], style, marker="o", color="tab:blue",
                    label=f"SAE features suppressed: {label}")  # fmt: skip
            ax.plot(layers, [_value(at("random", L), key) for L in layers], style, marker=".", color="tab:gray",
                    label=f"random features: {label}")  # fmt: skip
        if none is not None:
            ax.axhline(_value(none, key), color="black", linestyle=style, linewidth=1.6, zorder=5, alpha=0.8,
                       label=f"no intervention: {label} ({_value(none, key):.1f}%)")  # fmt: skip
        if head_row is not None:
            ax.axhline(_value(head_row, key), color="tab:orange", linestyle=style, linewidth=1.2,
                       label=f"head ablation ({head_row.get('heads')}): {label}")  # fmt: skip
    ax.set_xlabel("layer of the SAE")
    ax.set_ylabel("zero-shot accuracy, % (evaluation split)")
    if layers:
        ax.set_xticks(layers)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.subplots_adjust(left=0.08, right=0.68)
    ax.set_title(title or "accuracy by layer")
    if path is not None:
        save_figure(fig, Path(path))
    return fig
