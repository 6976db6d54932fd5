"""The feature dashboard as one static, self-contained HTML page (every image embedded as base64 PNG).

    html = dashboard_html([data])                   # DashboardData from viz.dashboard_data
    write_dashboard([data], "out/dashboard.html")   # atomic write

The page needs no server, script or network: it can be mailed, attached to a report or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from sae_clip_plugin.analysis.dashboard import MIN_SHOWN_CHANGE, DashboardData, FeatureData
from sae_clip_plugin.atomic import atomic_write_text
from sae_clip_plugin.viz.dashboard_figures import plot_activation_histogram, plot_steering_effect, tile_images

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin: 0 0 .3em 0; }
.meta { color: #555; font-size: .9em; }
.feature { border: 1px solid #ddd; border-radius: 6px; padding: .8em 1em; margin: 1em 0; }
.tiles { display: flex; flex-wrap: wrap; gap: .5em; }
figure { margin: 0; text-align: center; font-size: .75em; color: #444; }
figure img { image-rendering: pixelated; border: 1px solid #ccc; display: block; margin: 0 auto; }
figcaption { margin-top: .2em; }
.note { color: #555; font-size: .8em; max-width: 60em; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; margin-top: .6em; }
table { border-collapse: collapse; font-size: .85em; }
td, th { border: 1px solid #ddd; padding: .15em .5em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.gain { color: #1e8449; } .loss { color: #7f8c8d; }
"""


READING_NOTE = (
    '<p class="note">Reading a card: the top images show where the feature fires (what it reads); the steering '
    "bars show what clamping it on every token does to the zero-shot readout over the steering images (what it "
    "writes). The two need not agree: a feature can fire on yellow circles and push the readout towards another "
    "concept. Concepts gained and lost are counted beyond what random directions of the same norm do (any large "
    "edit loses the words the images already read as); S and P are the paper's (arXiv 2504.08729, sec. 3). "
    "Monosemanticity (Pach et al., arXiv 2504.02821; ViSAEBench's top-16 variant) is how alike the feature's "
    "top images look to a second encoder (1: identical), localisation is Moran's I of its patch map (0: no spatial "
    "pattern); on the toy neither separates trained from random SAEs (docs/toy_results.md).</p>"
)


def png_bytes(image: np.ndarray | Figure, dpi: int = 90) -> bytes:
    """PNG bytes of a uint8 image array or of a matplotlib Figure."""
    buffer = io.BytesIO()
    if isinstance(image, Figure):
        image.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    else:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="png")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(image: np.ndarray | Figure | bytes, alt: str, width: int | None = None) -> str:
    """An <img> with the picture embedded; `width` in CSS pixels (default: the picture's own)."""
    png = image if isinstance(image, bytes) else png_bytes(image)
    size = f' width="{int(width)}"' if width else ""
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}"{size}>'


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _steering_table(feature: FeatureData) -> str:
    s = feature.steering or {}
    if not s:
        return ""
    rows = [
        f'<tr><td class="gain">{html.escape(w)}</td><td>+{d:.3g}</td></tr>' for w, d in s.get("gained", [])
    ]
    rows += [f'<tr><td class="loss">{html.escape(w)}</td><td>{d:.3g}</td></tr>' for w, d in s.get("lost", [])]
    beyond = " beyond random directions" if s.get("beyond_random") else ""
    head = (
        f"<tr><th>concept</th><th>&Delta; probability{beyond} (|&Delta;| &gt; {MIN_SHOWN_CHANGE:g})</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def feature_card(feature: FeatureData, tile_width: int = 128) -> str:
    """One feature's section: stats line, top images with heatmaps, histogram, steering effect."""
    tiles = []
    for tile, top in zip(tile_images(feature), feature.top, strict=True):
        caption = f"image {top.index}<br>max {_fmt(top.max_activation)}"
        if top.cls_activation is not None:
            caption += f"<br>CLS {_fmt(top.cls_activation)}"
        alt = f"feature {feature.feature} on image {top.index}"
        tiles.append(f"<figure>{img_tag(tile, alt, tile_width)}<figcaption>{caption}</figcaption></figure>")
    s = feature.steering or {}
    stats = [
        f"fires on {100 * feature.density:.2f}% of {feature.n_tokens_seen} tokens",
        f"max activation {_fmt(feature.max_activation)}",
    ]
    if s:
        how = (
            f"steered at relative strength {s['relative_strength']:.3g} (s = {s.get('strength', 0):.3g})"
            if s.get("relative_strength") is not None
            else f"steered to {s.get('strength', 0):.3g}"
        )
        stats.append(
            f"{how}: S = {_fmt(s.get('S'))}, P = {_fmt(s.get('P'))}, "
            f"top concept <b>{html.escape(str(s.get('top_concept', '')))}</b>"
            + (" (steerable)" if s.get("steerable") else "")
        )
    if feature.direct_readout:
        words = ", ".join(f"{html.escape(w)} ({c:.2f})" for w, c in feature.direct_readout)
        stats.append(f"decoder direction read out directly (ln_post + projection), cosine with: {words}")
    m = feature.measures or {}
    if m:
        stats.append(
            f"monosemanticity {_fmt(m.get('monosemanticity')) or 'n/a'} (top-16 images, colour-histogram encoder), "
            f"localisation (Moran's I) {_fmt(m.get('localisation')) or 'n/a'}"
        )
    if feature.top and all(top.heatmap is None for top in feature.top):
        stats.append("no patch heat map: this SAE reads only the CLS token (the band above each image)")
    elif feature.top and all(t.heatmap is not None and not np.any(t.heatmap > 0) for t in feature.top):
        stats.append(
            "fires on the CLS token only in these images: the band above each image, not the patches"
        )
    label = f" <small>{html.escape(feature.label)}</small>" if feature.label else ""
    plots = [
        img_tag(plot_activation_histogram(feature), f"activation histogram of feature {feature.feature}")
    ]
    if s:
        plots.append(img_tag(plot_steering_effect(feature), f"steering effect of feature {feature.feature}"))
        plots.append(_steering_table(feature))
    return (
        f'<section class="feature" id="feature-{feature.feature}">'
        f"<h2>Feature {feature.feature}{label}</h2>"
        f'<p class="meta">{" &middot; ".join(stats)}</p>'
        f'<div class="tiles">{"".join(tiles)}</div>'
        f'<div class="plots">{"".join(plots)}</div></section>'
    )


def dashboard_section(data: DashboardData) -> str:
    """The features of one SAE under a heading that says which SAE and image set."""
    meta = (
        f"model {html.escape(str(data.model_spec))} &middot; hook <code>{html.escape(data.hook_name)}</code> "
        f"&middot; {html.escape(str(data.info.get('architecture', '')))} SAE, {data.d_sae} features, tokens: "
        f"{html.escape(data.token_selection)} &middot; {data.n_images} images, {data.patch_side}x{data.patch_side} "
        "patches (heatmap = the feature's activation on each patch, the band above each image = its activation "
        "on the CLS token, one colour scale per feature)"
    )
    cards = "".join(feature_card(f) for f in data.features)
    return f'<h1>{html.escape(data.title)}</h1><p class="meta">{meta}</p>{READING_NOTE}{cards}'


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def dashboard_html(
    dashboards: DashboardData | Sequence[DashboardData], title: str = "Feature dashboard"
) -> str:
    """A full HTML page with one section per SAE."""
    items = [dashboards] if isinstance(dashboards, DashboardData) else list(dashboards)
    return page(title, "\n".join(dashboard_section(d) for d in items))


def write_dashboard(
    dashboards: DashboardData | Sequence[DashboardData],
    path: str | os.PathLike,
    title: str = "Feature dashboard",
) -> Path:
    """Write the self-contained dashboard page to `path` (atomically)."""
    return atomic_write_text(path, dashboard_html(dashboards, title))
