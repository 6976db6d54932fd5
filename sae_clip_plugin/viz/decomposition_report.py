"""The written results of `sae-clip decompose`: per-head table (CSV, markdown), summary, heat maps and token maps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sae_clip_plugin.atomic import atomic_write_json, atomic_write_text
from sae_clip_plugin.tables import markdown_table


def heads_markdown(rows: list[dict[str, Any]], command: str, typographic: bool) -> str:
    cols = ["layer", "head", "direct_effect", "variance_share"] + (
        ["typographic_effect"] if typographic else []
    )
    cols.append("textspan")
    order = sorted(rows, key=lambda r: -abs(r["typographic_effect" if typographic else "direct_effect"]))
    lines = [
        "# Direct effects of attention heads on the image embedding",
        "",
        "The image embedding is the exact sum of each head's, neuron's and bias's direct contribution through "
        "ln_post (its scale frozen) and the projection (Gandelsman, Efros & Steinhardt, ICLR 2024). Per head, "
        "over the images: `direct_effect` = mean contribution to the correct class's zero-shot logit minus its "
        "mean over all classes (logit units); `variance_share` = variance of the head's contribution over images "
        "/ variance of the embedding; "
        + (
            "`typographic_effect` = how much more the head favours the written class over the true one on the "
            "attacked image than on its clean twin (logit units, mean over pairs); "
            if typographic
            else ""
        )
        + "`textspan` = the texts whose directions explain most of the head's output variance (TextSpan, "
        "their Alg. 1), with the fraction each explains, largest first. Rows sorted by the absolute "
        + ("typographic effect." if typographic else "direct effect."),
        "",
        markdown_table(cols, [[row[c] for c in cols] for row in order]),
    ]
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def write_decomposition(
    result: Any, out: str | os.PathLike, command: str = "sae-clip decompose"
) -> list[Path]:
    """heads.csv, heads.md, summary.json, head_direct_effect.png, head_typographic_effect.png (typographic tasks)
    and token_maps.png of a DecompositionResult, atomically; returns the paths written."""
    # lazy: pandas, torch, matplotlib (this module imports none of them)
    import pandas as pd

    from sae_clip_plugin.analysis.dashboard import display_images
    from sae_clip_plugin.viz.decomposition_figures import plot_head_heatmap, plot_token_maps

    out = Path(out)
    report, typo, maps = result.report, result.typographic_effect, result.token_maps
    written = [out / "heads.csv", out / "heads.md", out / "summary.json", out / "head_direct_effect.png"]
    atomic_write_text(written[0], pd.DataFrame(report.rows).to_csv(index=False))
    atomic_write_text(written[1], heads_markdown(report.rows, command, typo is not None))
    plot_head_heatmap(report.direct_effect, f"{result.task}: direct effect on the correct class",
                      "logit (correct - mean over classes)", written[3])  # fmt: skip
    if typo is not None:
        written.append(out / "head_typographic_effect.png")
        plot_head_heatmap(typo, f"{result.task}: direct typographic effect",
                          "logit (written - true), attacked - clean", written[-1])  # fmt: skip
    written.append(out / "token_maps.png")
    plot_token_maps(display_images(maps.pixels, result.preprocess)[0], maps.maps, maps.titles, f"logit ({maps.what})",
                    suptitle=f"where the top heads by {maps.by.replace('_', ' ')} take it from", path=written[-1])  # fmt: skip
    atomic_write_json(written[2], result.summary, indent=1)
    return written
