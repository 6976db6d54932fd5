"""Feature dashboard figures (matplotlib Figures for notebooks, and the pictures of the HTML page).

- `overlay_heatmap`: an image with the feature's patch activations blended on top (uint8 array);
- `plot_top_images`, `plot_activation_histogram`, `plot_steering_effect`: one panel each;
- `plot_feature`: the three together, the notebook version of one dashboard card.

Figures use matplotlib's Agg canvas directly (pyplot's global state is never touched); Jupyter's
inline backend still displays a returned Figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from PIL import Image

from sae_clip_plugin.analysis.dashboard import MIN_SHOWN_CHANGE, FeatureData

CMAP = "inferno"
MAX_ALPHA = 0.6


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def overlay_heatmap(
    image: np.ndarray, heatmap: np.ndarray | None, vmax: float | None = None, cmap: str = CMAP
) -> np.ndarray:
    """Blend the patch heatmap ([side, side]) onto `image` ([S, S, 3] uint8); returns uint8 [S, S, 3].

    Each patch covers its S/side x S/side block (nearest upsampling, so patches keep their borders);
    opacity grows with activation / vmax, so inactive patches leave the image untouched.
    """
    if heatmap is None:
        return image.copy()
    size = image.shape[0], image.shape[1]
    vmax = float(vmax) if vmax and vmax > 0 else float(np.nanmax(heatmap))
    if not np.isfinite(vmax) or vmax <= 0:
        return image.copy()
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)) / vmax, 0.0, 1.0)
    up = np.asarray(Image.fromarray((h * 255).astype(np.uint8)).resize(size[::-1], Image.NEAREST))
    up = up.astype(np.float64) / 255.0
    colour = colormaps[cmap](up)[..., :3]
    alpha = (MAX_ALPHA * up)[..., None]
    out = (1 - alpha) * image.astype(np.float64) / 255.0 + alpha * colour
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _upscale(image: np.ndarray, min_size: int = 128) -> np.ndarray:
    """Small (toy) images blown up with nearest neighbours so patches stay visible."""
    s = image.shape[0]
    if s >= min_size:
        return image
    factor = -(-min_size // s)
    return np.asarray(Image.fromarray(image).resize((s * factor, s * factor), Image.NEAREST))


def with_cls_band(tile: np.ndarray, value: float | None, vmax: float, cmap: str = CMAP) -> np.ndarray:
    """The tile with a band above it in the heatmap's colour map at the CLS activation (black: 0, pale: vmax).

    CLS is not a patch, so a feature that fires on CLS alone leaves the patch map blank; the band shows it.
    """
    if value is None:
        return tile
    height = max(6, tile.shape[0] // 8)
    level = float(np.clip(value / vmax, 0.0, 1.0)) if vmax and vmax > 0 else 0.0
    band = np.empty((height, tile.shape[1], 3), dtype=np.uint8)
    band[:] = np.round(np.asarray(colormaps[cmap](level)[:3]) * 255).astype(np.uint8)
    band[-1:] = 255  # a white line between the band and the image
    return np.concatenate([band, tile], axis=0)


def tile_images(data: FeatureData) -> list[np.ndarray]:
    """The top images with their heatmaps and CLS bands, all on one colour scale (the feature's max activation)."""
    vmax = data.max_activation
    return [with_cls_band(_upscale(overlay_heatmap(t.image, t.heatmap, vmax)), t.cls_activation, vmax)
            for t in data.top]  # fmt: skip


def _caption(t) -> str:
    text = f"#{t.index} max {t.max_activation:.3g}"
    if t.cls_activation is not None:
        text += f"\nCLS {t.cls_activation:.3g}"
    return text


def plot_top_images(data: FeatureData, fig: Figure | None = None, axes=None) -> Figure:
    """The top-activating images with their patch heatmaps and CLS bands (max activation and CLS value below)."""
    n = max(1, len(data.top))
    if fig is None:
        fig = _figure(1.7 * n, 2.1)
    axes = axes if axes is not None else fig.subplots(1, n, squeeze=False)[0]
    for ax, tile, t in zip(axes, tile_images(data), data.top, strict=False):
        ax.imshow(tile)
        ax.set_title(_caption(t), fontsize=7)
        ax.axis("off")
    for ax in list(axes)[len(data.top) :]:
        ax.axis("off")
    fig.suptitle(f"feature {data.feature} at {data.hook_name}: top images", fontsize=9)
    return fig


def plot_activation_histogram(data: FeatureData, ax=None, n_bins: int = 40) -> Figure:
    """Histogram of the feature's non-zero activations (log counts above 20 tokens a bin); density in the title."""
    fig = ax.figure if ax is not None else _figure(4.0, 2.6)
    ax = ax or fig.subplots()
    values = data.nonzero
    if values.size:
        counts, _, _ = ax.hist(values, bins=n_bins, color="#c0392b")
        if counts.max() > 20:  # log counts, labelled as plain numbers (1, 10, 100), no minor labels
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:  # a handful of tokens: whole counts on a linear axis
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, "never fires", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("activation (non-zero)")
    ax.set_ylabel("tokens")
    ax.set_title(
        f"fires on {100 * data.density:.2f}% of {data.n_tokens_seen} tokens ({data.n_images} images)",
        fontsize=8,
    )
    return fig


def plot_steering_effect(data: FeatureData, ax=None) -> Figure:
    """Concepts gained (and lost) in the readout when the feature is clamped: mean probability change."""
    fig = ax.figure if ax is not None else _figure(4.0, 2.6)
    ax = ax or fig.subplots()
    s = data.steering or {}
    items = list(s.get("gained", [])) + list(reversed(s.get("lost", [])))
    if not items:
        ax.text(0.5, 0.5, "no steering measured", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
        return fig
    words = [w for w, _ in items][::-1]
    deltas = [d for _, d in items][::-1]
    ax.barh(words, deltas, color=["#27ae60" if d > 0 else "#7f8c8d" for d in deltas])
    ax.axvline(0, color="black", lw=0.6)
    beyond = " beyond random directions" if s.get("beyond_random") else ""
    ax.set_xlabel(f"mean change in readout probability{beyond}\n(|change| <= {MIN_SHOWN_CHANGE:g} not shown)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"steered to {s.get('strength', 0):.3g}: S={s.get('S', float('nan')):.3g}", fontsize=8)
    return fig


def plot_feature(data: FeatureData) -> Figure:
    """One dashboard card as a Figure: top images above, histogram and steering effect below."""
    n = max(1, len(data.top))
    cols = max(n, 2)
    fig = _figure(max(1.7 * cols, 8.0), 5.0)
    grid = fig.add_gridspec(2, cols, height_ratios=[1.1, 1.0], hspace=0.55)
    plot_top_images(data, fig=fig, axes=[fig.add_subplot(grid[0, i]) for i in range(n)])
    half = cols // 2
    plot_activation_histogram(data, ax=fig.add_subplot(grid[1, :half]))
    plot_steering_effect(data, ax=fig.add_subplot(grid[1, half:]))
    title = f"feature {data.feature} at {data.hook_name}"
    fig.suptitle(title + (f" ({data.label})" if data.label else ""), fontsize=10)
    return fig
