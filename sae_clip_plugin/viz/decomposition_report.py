"""The markdown table of `sae-clip decompose`: per-head direct effects, typographic effects and TextSpan texts."""

from __future__ import annotations

from typing import Any

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
        "their Alg. 1), with the fraction each explains. Rows sorted by the absolute "
        + ("typographic effect." if typographic else "direct effect."),
        "",
        markdown_table(cols, [[row[c] for c in cols] for row in order]),
    ]
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)
