"""Figures of the image-embedding decomposition: a layer x head heat map and per-token maps on an image.

PNG through matplotlib's Agg canvas (pyplot's global state is never touched).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from sae_clip_plugin.viz.metrics_figures import save_figure


def _symmetric_norm(values: np.ndarray) -> TwoSlopeNorm:
    """Zero in the middle of the colour scale (white), so sign is read at a glance."""
    bound = float(np.abs(values).max()) or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)


def plot_head_heatmap(
    values: torch.Tensor,
    title: str,
    colour_label: str,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Layer (rows) x head (columns) heat map with each cell's value printed in it."""
    v = values.detach().double().cpu().numpy()
    n_layers, n_heads = v.shape
    fig = Figure(figsize=(1.0 + 0.6 * n_heads, 1.0 + 0.4 * n_layers), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(v, cmap="RdBu_r", norm=_symmetric_norm(v), aspect="auto")
    fig.colorbar(image, ax=ax, label=colour_label)
    if n_layers * n_heads <= 400:
        big = float(np.abs(v).max()) or 1.0
        for (layer, head), value in np.ndenumerate(v):
            colour = "white" if abs(value) > 0.6 * big else "black"
            ax.text(head, layer, f"{value:.2g}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=11)
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig


def plot_token_maps(
    image: np.ndarray,
    maps: Sequence[torch.Tensor],
    titles: Sequence[str],
    colour_label: str,
    suptitle: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """The image, then one [grid, grid] map per entry of `maps` drawn over it (shared colour scale).

    Each map is a head's direct contribution from each patch (the CLS token's own share is in the
    title: it has no place on the grid).
    """
    arrays = [m.detach().double().cpu().numpy() for m in maps]
    norm = _symmetric_norm(np.stack(arrays)) if arrays else None
    n = len(arrays) + 1
    fig = Figure(figsize=(2.6 * n, 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    size = image.shape[0]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=10)
    last = None
    for ax, values, title in zip(axes[1:], arrays, titles, strict=True):
        ax.imshow(image, alpha=0.45)
        last = ax.imshow(values, cmap="RdBu_r", norm=norm, alpha=0.75, extent=(0, size, size, 0))
        ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if last is not None:
        fig.colorbar(last, ax=list(axes[1:]), label=colour_label, shrink=0.85)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig
