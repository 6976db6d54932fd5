"""The written results of `sae-clip disentangle` (and the demo's disentanglement step): CSV, markdown, JSON, PNG.

The markdown states the selection/evaluation protocol and the success bar where the numbers are printed
(wording shared with the demo report: `analysis.disentangle.text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_clip_plugin.analysis.disentangle.text import (
    INTERVAL_NOTE,
    TABLE_KEYS,
    bars_text,
    column_names,
    condition_rows,
    headline,
    summary_cells,
)
from sae_clip_plugin.atomic import atomic_write_json, atomic_write_text
from sae_clip_plugin.tables import markdown_table
from sae_clip_plugin.viz.disentangle_figures import plot_accuracy_by_layer


def task_markdown(result: Any, task: Any, command: str) -> str:
    """The markdown section of one task: the headline, chosen settings against baselines, accuracy by layer."""
    kind = result.kind
    keys = TABLE_KEYS[kind]
    s = result.summary
    out = [f"## {result.task} ({kind})", ""]
    if "sae" in s:
        out += [f"**{headline(s, kind)}**", ""]
    out += [
        f"Selection split: {len(task.select)} images; evaluation split: {len(task.evaluate)} images (disjoint). "
        "Features, k, the layer and the head count are chosen on the selection split; numbers are on the "
        "evaluation split.",
        "",
        markdown_table(["condition", "layer", "setting", *column_names(keys)], condition_rows(s, kind)),
        "",
        INTERVAL_NOTE,
        "",
    ]
    if "sae" in s:
        out += [
            f"Best layer: {s['sae']['layer']} (`{s['sae']['hook']}`), features {s['sae']['features']}.",
            "",
        ]
    by_layer = []
    k_per_layer = result.best.get("k_per_layer", {})
    ev = result.eval_rows()
    for layer, k in sorted(k_per_layer.items()):
        sae_row = next((r for r in ev if r["condition"] == "sae" and r["layer"] == layer and r["k"] == k), {})
        rnd = next((r for r in ev if r["condition"] == "random" and r["layer"] == layer and r["k"] == k), {})
        by_layer.append([layer, k, *summary_cells(sae_row, keys[:2]), *summary_cells(rnd, keys[:2])])
    if by_layer:
        names = column_names(keys[:2])
        out += ["### By layer (k chosen per layer on the selection split)", ""]
        out += [
            markdown_table(
                ["layer", "k", *[f"SAE: {x}" for x in names], *[f"random: {x}" for x in names]], by_layer
            ),
            "",
        ]
    out += [f"Command: `{command}`", ""]
    return "\n".join(out)


def write_disentangle_outputs(results: Sequence[tuple[Any, Any]], out: Path, command: str) -> list[Path]:
    """disentangle.csv (every row), disentangle.md, summary.json and accuracy_by_layer_<task>.png."""
    import pandas as pd  # lazy: pandas

    written = []
    rows = [r for result, _ in results for r in result.rows]
    atomic_write_text(out / "disentangle.csv", pd.DataFrame(rows).to_csv(index=False))
    md = ["# Disentanglement: suppressing spurious SAE features", ""]
    md += [bars_text((result.kind, result.summary) for result, _ in results), ""]
    md += [task_markdown(result, task, command) for result, task in results]
    atomic_write_text(out / "disentangle.md", "\n".join(md))
    summary = {result.task: {"summary": result.summary, "best": result.best} for result, _ in results}
    atomic_write_json(out / "summary.json", summary, indent=1, default=str)
    written += [out / "disentangle.csv", out / "disentangle.md", out / "summary.json"]
    for result, _ in results:
        png = out / f"accuracy_by_layer_{result.task.replace('/', '_')}.png"
        heads = result.best.get("heads", {}).get("heads")
        plot_accuracy_by_layer(result.rows, result.kind, result.best.get("k_per_layer"), heads=heads,
                               title=result.task, path=png)  # fmt: skip
        written.append(png)
    return written


def summary_line(result: Any) -> str:
    """One human line per task: each condition's main accuracies (percent), as in the markdown table, and whether
    SAE suppression meets the bar."""
    keys = TABLE_KEYS[result.kind][:2]
    parts = []
    for condition in ("none", "sae", "random", "heads"):
        row = result.summary.get(condition)
        if not row:
            continue
        where = f" L{row['layer']} k={row['k']}" if "k" in row and "layer" in row else ""
        values = " / ".join(f"{100 * row[k]:.1f}" for k in keys if k in row)
        parts.append(f"{condition}{where}: {values}")
    sae = result.summary.get("sae")
    verdict = (
        ""
        if not sae
        else f" -> SAE suppression {'meets' if sae.get('meets_bar') else 'does not meet'} the bar"
    )
    return f"{result.task} ({' / '.join(column_names(keys))}): " + "; ".join(parts) + verdict
