"""The written results of `sae-clip disentangle` (and the demo's disentanglement step): CSV, markdown, JSON, PNG.

The markdown states the selection/evaluation protocol and the success bar where the numbers are printed
(wording shared with the demo report: `analysis.disentangle.text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_clip_plugin.analysis.disentangle.text import INTERVAL_NOTE, TABLE_KEYS, summary_cells, verdict_text
from sae_clip_plugin.atomic import atomic_write_json, atomic_write_text
from sae_clip_plugin.tables import markdown_table
from sae_clip_plugin.viz.disentangle_figures import plot_accuracy_by_layer


def task_markdown(result: Any, task: Any, command: str) -> str:
    """The markdown section of one task: chosen settings against baselines, then accuracy by layer."""
    kind = result.kind
    keys = TABLE_KEYS[kind]
    s = result.summary
    out = [
        f"## {result.task} ({kind})",
        "",
        f"Selection split: {len(task.select)} images; evaluation split: {len(task.evaluate)} images (disjoint). "
        "Features, k, the layer and the head count are chosen on the selection split; numbers are on the "
        "evaluation split.",
        "",
    ]

    def cells(row: dict[str, Any]) -> list[str]:
        return summary_cells(row, keys)

    rows = [["none", "", "", *cells(s["none"])]]
    if "sae" in s:
        rows.append(["SAE features suppressed", s["sae"]["layer"], f"k={s['sae']['k']}", *cells(s["sae"])])
    if "random" in s:
        rows.append(["random features (same layer, k)", s["random"]["layer"], f"k={s['random']['k']}",
                     *cells(s["random"])])  # fmt: skip
    if "heads" in s:
        rows.append(["head ablation (CLS)", "", s["heads"]["heads"], *cells(s["heads"])])
    out += [markdown_table(["condition", "layer", "setting", *keys], rows), ""]
    out += [INTERVAL_NOTE, ""]
    if "sae" in s:
        out += [verdict_text(s, kind), ""]
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
        by_layer.append([layer, k, *[sae_row.get(x) for x in keys[:2]], *[rnd.get(x) for x in keys[:2]]])
    if by_layer:
        out += ["### By layer (k chosen per layer on the selection split)", ""]
        out += [
            markdown_table(
                ["layer", "k", *[f"SAE {x}" for x in keys[:2]], *[f"random {x}" for x in keys[:2]]], by_layer
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
    """One human line per task: each condition's main accuracies (percent), as in the markdown table."""
    keys = TABLE_KEYS[result.kind][:2]
    parts = []
    for condition in ("none", "sae", "random", "heads"):
        row = result.summary.get(condition)
        if not row:
            continue
        where = f" L{row['layer']} k={row['k']}" if "k" in row and "layer" in row else ""
        values = " / ".join(f"{100 * row[k]:.1f}" for k in keys if k in row)
        parts.append(f"{condition}{where}: {values}")
    return f"{result.task} ({' / '.join(keys)}, %): " + "; ".join(parts)
