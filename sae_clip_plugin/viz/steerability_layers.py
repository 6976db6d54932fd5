"""The paper's per-layer steerability picture (arXiv 2504.08729, section 3): fraction of steerable SAE features,
neurons and random directions per layer, on the trained and on a random model, with 95% intervals."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sae_clip_plugin.viz.steering_figures import _pyplot

STYLE = {  # (model, basis) -> (colour, marker, line style): trained solid, random model dashed
    ("trained", "SAE features"): ("tab:blue", "o", "-"),
    ("trained", "neurons"): ("tab:orange", "s", "-"),
    ("trained", "random directions"): ("tab:green", "^", "-"),
    ("random model", "SAE features"): ("tab:blue", "o", "--"),
    ("random model", "neurons"): ("tab:orange", "s", "--"),
    ("random model", "random directions"): ("tab:green", "^", "--"),
}


def plot_steerability_by_layer(summary: pd.DataFrame, ax: Any = None, paper_band: bool = True) -> Any:
    """Percent steerable against layer per (model, basis) from `summarise_conditions` rows with a `layer`
    column (fractions there, percent on the axis like the tables); error bars are the 95% intervals; the grey band
    is the paper's 10-15% (section 3). The legend sits right of the axes, off the data."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(8.8, 4))
    if paper_band:
        ax.axhspan(10, 15, color="grey", alpha=0.2, label="paper: 10-15% steerable (ViT-B/32)")
    for (model, basis), group in summary.groupby(["model", "basis"], sort=False):
        group = group.sort_values("layer")
        colour, marker, line = STYLE.get((model, basis), (None, "o", "-"))
        y = 100 * group["steerable_fraction"]
        err = [y - 100 * group["fraction_lo"], 100 * group["fraction_hi"] - y]
        offset = 0.06 * (list(STYLE).index((model, basis)) - 2.5) if (model, basis) in STYLE else 0.0
        ax.errorbar(group["layer"] + offset, y, yerr=err, color=colour, marker=marker, ls=line, ms=4, capsize=2,
                    label=f"{basis} ({model})")  # fmt: skip
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("% steerable (S > 0.10)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.figure.tight_layout()
    return ax.figure
