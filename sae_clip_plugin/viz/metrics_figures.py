"""Figures of SAE metrics (PNG, matplotlib's Agg canvas; pyplot's global state is never touched).

Inputs are the rows / DataFrame of `analysis.metrics.evaluate_sae(s)`:
- `plot_l0_by_layer`: L0 of CLS vs patch tokens across layers (the paper's sparsity figure);
- `plot_l0_heatmap`: L0 per patch position as the image grid, CLS L0 in the title;
- `plot_density_histogram`: log10 feature firing density, dead features counted in each SAE's label;
- `plot_ev_vs_l0`: explained variance against L0 across SAEs.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from sae_clip_plugin.atomic import atomic_write

Row = Mapping[str, Any]
SERIES_KEYS = ("hook_type", "token_selection", "architecture", "d_sae", "k", "l1_coefficient")


def _figure(width: float = 6.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Write `fig` as PNG atomically (temporary file in the same folder, then rename)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight", dpi=dpi))


def _rows(data: Any) -> list[Row]:
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        return data.to_dict("records")
    if isinstance(data, Mapping):
        return [data]
    return list(data)


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float, np.number)) and math.isfinite(float(v))


def _series(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows grouped into lines by the identifying keys that vary (hook type, selection, width, sparsity)."""
    varying = [k for k in SERIES_KEYS if len({repr(r.get(k)) for r in rows}) > 1]
    groups: dict[str, list[Row]] = {}
    for r in rows:
        # a setting that does not apply to this SAE (k of an L1 SAE: NaN) is left out of its label
        shown = [
            k
            for k in varying
            if r.get(k) is not None and not (isinstance(r.get(k), float) and math.isnan(r[k]))
        ]
        label = ", ".join(_setting(k, r[k]) for k in shown)
        groups.setdefault(label, []).append(r)
    return groups


def _setting(key: str, value: Any) -> str:
    """`k=16`, `l1_coefficient=5`, or the bare value for the hook type and architecture."""
    if key in ("hook_type", "architecture"):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"


def plain_log_axis(axis: Any) -> None:
    """Log-scale tick labels as plain numbers (20, not 2x10^1)."""
    formatter = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))


def plot_l0_by_layer(data: Any, path: str | os.PathLike | None = None, log: bool = True) -> Figure:
    """L0 per token of CLS (solid) and patches (dashed) against layer, one colour per SAE family.

    The y axis is logarithmic (as in the paper) when `log` and the values span at least a decade.
    """
    rows = [r for r in _rows(data) if _finite(r.get("layer"))]
    if not rows:
        raise ValueError("no SAE with a layer (hooks blocks.{L}.…) to plot")
    fig = _figure()
    ax = fig.add_subplot()
    colours = itertools.cycle(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    for label, members in _series(rows).items():
        members = sorted(members, key=lambda r: r["layer"])
        colour = next(colours)
        for key, style, name in (("l0_cls", "-o", "CLS"), ("l0_patches", "--s", "patches")):
            pts = [(r["layer"], r[key]) for r in members if _finite(r.get(key))]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, color=colour, label=f"{name}" + (f" ({label})" if label else ""))
    ax.set_xlabel("layer")
    ax.set_ylabel("L0 (active features per token)")
    values = [r[k] for r in rows for k in ("l0_cls", "l0_patches") if _finite(r.get(k)) and r[k] > 0]
    if log and values and max(values) / min(values) >= 10:  # log only when the values span a decade
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
    ax.set_title("SAE sparsity by layer: CLS vs patch tokens")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_l0_heatmap(row: Row, path: str | os.PathLike | None = None, ax: Any = None) -> Figure:
    """The L0 of each patch position as the image's patch grid; CLS L0 in the title."""
    grid = row.get("l0_patch_grid")
    fig = ax.figure if ax is not None else _figure(4.2, 3.6)
    ax = ax if ax is not None else fig.add_subplot()
    name = row.get("name") or row.get("hook_name") or "SAE"
    if grid is None or not np.isfinite(np.asarray(grid, dtype=float)).any():
        ax.text(0.5, 0.5, "no patch tokens", ha="center", va="center")
        ax.set_axis_off()
    else:
        image = ax.imshow(np.asarray(grid, dtype=float), cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="L0")
        ax.set_xticks([])
        ax.set_yticks([])
    cls = row.get("l0_cls")
    ax.set_title(f"{name}\nCLS L0 = {cls:.1f}" if _finite(cls) else str(name), fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


def varies_by_position(row: Row) -> bool:
    """False for SAEs whose L0 is the same at every patch (TopK: L0 = k everywhere), which a map cannot show."""
    grid = row.get("l0_patch_grid")
    values = np.asarray(grid, dtype=float) if grid is not None else np.array([])
    values = values[np.isfinite(values)]
    return values.size > 0 and float(values.max() - values.min()) > 1e-6


def plot_l0_heatmaps(data: Any, path: str | os.PathLike | None = None, cols: int = 4) -> Figure:
    """`plot_l0_heatmap` for every SAE whose L0 varies with the patch position, one panel each."""
    rows = [r for r in _rows(data) if varies_by_position(r)]
    if not rows:
        raise ValueError("no SAE's L0 varies with the patch position (TopK SAEs have L0 = k everywhere)")
    n_cols = min(cols, len(rows))
    n_rows = math.ceil(len(rows) / n_cols)
    fig = _figure(3.4 * n_cols, 3.0 * n_rows)
    for i, row in enumerate(rows):
        plot_l0_heatmap(row, ax=fig.add_subplot(n_rows, n_cols, i + 1))
    if path is not None:
        save_figure(fig, path)
    return fig


def density_bins(densities: Iterable[np.ndarray], n_bins: int = 40) -> np.ndarray:
    """Shared log10 bin edges covering every live feature's density."""
    live = [np.log10(d[d > 0]) for d in densities if np.any(np.asarray(d) > 0)]
    low = min((float(x.min()) for x in live), default=-6.0)
    return np.linspace(math.floor(min(low, -1.0)), 0.0, n_bins + 1)


def plot_density_histogram(
    data: Any, path: str | os.PathLike | None = None, n_bins: int = 40, overlay_max: int = 4, cols: int = 4
) -> Figure:
    """Histogram of log10(feature firing density) per SAE; dead features (never fired) counted in its label.

    Up to `overlay_max` SAEs share one panel; more get one small panel each (same bins).
    """
    rows = [r for r in _rows(data) if r.get("feature_density") is not None]
    if not rows:
        raise ValueError("no feature_density to plot; pass rows of evaluate_sae(s)")
    densities = [np.asarray(r["feature_density"], dtype=float) for r in rows]
    bins = density_bins(densities, n_bins)
    overlay = len(rows) <= overlay_max
    n_cols = 1 if overlay else min(cols, len(rows))
    n_rows = 1 if overlay else math.ceil(len(rows) / n_cols)
    fig = _figure(6.0, 4.0) if overlay else _figure(3.2 * n_cols, 2.4 * n_rows)
    axes = (
        [fig.add_subplot()] if overlay else [fig.add_subplot(n_rows, n_cols, i + 1) for i in range(len(rows))]
    )
    for i, (row, d) in enumerate(zip(rows, densities, strict=True)):
        ax = axes[0 if overlay else i]
        dead = int((d == 0).sum())
        label = f"{row.get('name') or row.get('hook_name')} (dead {dead}/{d.size})"
        ax.hist(np.log10(d[d > 0]), bins=bins, histtype="step", label=label)
        if overlay:
            ax.legend(fontsize=8, loc="upper left")
        else:
            ax.set_title(label, fontsize=9)
    window = rows[0].get("dead_window_images")
    title = "feature density" + (f" over {window} images" if window else "")
    xlabel, ylabel = "log10 firing density (fraction of tokens)", "features"
    if overlay:
        axes[0].set(xlabel=xlabel, ylabel=ylabel, title=title)
    else:
        fig.suptitle(title)
        fig.supxlabel(xlabel)
        fig.supylabel(ylabel)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_ev_vs_l0(data: Any, path: str | os.PathLike | None = None) -> Figure:
    """Explained variance (all evaluated tokens) against L0, one point per SAE, labelled by layer."""
    rows = [r for r in _rows(data) if _finite(r.get("l0_all")) and _finite(r.get("explained_variance_all"))]
    if not rows:
        raise ValueError("no SAE with finite l0_all and explained_variance_all to plot")
    fig = _figure()
    ax = fig.add_subplot()
    for label, members in _series(rows).items():
        xs = [r["l0_all"] for r in members]
        ys = [r["explained_variance_all"] for r in members]
        ax.scatter(xs, ys, label=label or None)
        for r, x, y in zip(members, xs, ys, strict=True):
            tag = f"L{r['layer']}" if _finite(r.get("layer")) else str(r.get("name"))
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    if min(r["l0_all"] for r in rows) > 0:
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis)
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel("explained variance")
    ax.set_title("reconstruction vs sparsity")
    ax.grid(alpha=0.3)
    if any(_series(rows)):  # a legend only when there is more than one family
        ax.legend(fontsize=7)
    if path is not None:
        save_figure(fig, path)
    return fig


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "sae"


def write_metrics_figures(data: Any, out_dir: str | os.PathLike, per_sae: bool = True) -> list[Path]:
    """Every metrics figure for a sweep into `out_dir` (`per_sae`: one L0 heat map per SAE too); returns the paths
    written."""
    out_dir = Path(out_dir)
    rows = _rows(data)
    written = []
    # a figure against layer needs two layers, one of L0 against EV two SAEs: one point on an axis says nothing
    if len({r.get("layer") for r in rows if _finite(r.get("layer"))}) >= 2:
        written.append(save_figure(plot_l0_by_layer(rows), out_dir / "l0_by_layer.png"))
    varying = [r for r in rows if varies_by_position(r)]  # TopK: L0 = k on every patch, nothing to map
    if varying:
        written.append(save_figure(plot_l0_heatmaps(varying), out_dir / "l0_position_heatmaps.png"))
    for row in varying if per_sae else []:
        name = _slug(str(row.get("name") or row.get("hook_name")))
        written.append(save_figure(plot_l0_heatmap(row), out_dir / f"l0_heatmap_{name}.png"))
    written.append(save_figure(plot_density_histogram(rows), out_dir / "density_histogram.png"))
    if sum(_finite(r.get("explained_variance_all")) for r in rows) >= 2:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message='.*loc="best".*'
            )  # matplotlib's legend placement search
            written.append(save_figure(plot_ev_vs_l0(rows), out_dir / "ev_vs_l0.png"))
    return written
