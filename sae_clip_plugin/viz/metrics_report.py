"""The written results of `sae-clip eval` (and the demo's metrics step): metrics.csv, metrics.md, arrays.npz, figures.

`load_metrics_results` reads them back, so figures can be redrawn (`sae-clip eval --replot`) without
re-evaluating.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sae_clip_plugin.atomic import atomic_write_text

# columns of the markdown summary (the CSV has every scalar)
SUMMARY_COLUMNS = (
    "name",
    "layer",
    "hook_type",
    "token_selection",
    "d_sae",
    "n_images",
    "explained_variance_all",
    "explained_variance_cls",
    "explained_variance_patches",
    "cos_sim_all",
    "l0_all",
    "l0_cls",
    "l0_patches",
    "dead_fraction",
    "dense_fraction_10",
    "top1_clean",
    "top1_spliced",
    "top1_spliced_err",
    "top1_mean_abl",
    "ce_clean",
    "ce_spliced",
    "ce_mean_abl",
    "ce_recovered_zero",
    "ce_recovered_mean",
    "top1_recovered_mean",
    "embed_cos_spliced",
    "kl_spliced",
)


def write_metrics_results(
    df: Any, out: Path, title: str, columns: Sequence[str] = SUMMARY_COLUMNS, per_sae_figures: bool = True
) -> list[Path]:
    """metrics.csv (every scalar), metrics.md (`columns`), arrays.npz and the figures (`per_sae_figures`: also
    one L0 heat map per SAE, besides the sweep-level figures)."""
    # lazy: sae_lens, matplotlib (this module imports neither)
    from sae_clip_plugin.analysis.metrics.evaluate import ARRAY_KEYS, metrics_table, to_markdown
    from sae_clip_plugin.viz.metrics_figures import write_metrics_figures

    table = metrics_table(df)
    atomic_write_text(out / "metrics.csv", table.to_csv(index=False))
    atomic_write_text(out / "metrics.md", f"# {title}\n\n{to_markdown(table, list(columns))}")
    arrays = {
        f"{row['name']}/{key}": np.asarray(row[key], dtype=float)
        for _, row in df.iterrows()
        for key in ARRAY_KEYS
        if key in row and row[key] is not None
    }
    with tempfile.NamedTemporaryFile(dir=out, suffix=".npz", delete=False) as f:
        np.savez(f, **arrays)
    os.replace(f.name, out / "arrays.npz")
    return write_metrics_figures(df, out / "figures", per_sae=per_sae_figures)


def load_metrics_results(out: str | os.PathLike) -> Any:
    """The DataFrame `write_metrics_results` wrote (metrics.csv with its arrays.npz entries put back)."""
    import pandas as pd  # lazy: pandas

    out = Path(out)
    if not (out / "metrics.csv").is_file():
        raise FileNotFoundError(f"{out} has no metrics.csv; run `sae-clip eval ... --out {out}` first")
    df = pd.read_csv(out / "metrics.csv")
    with np.load(out / "arrays.npz") as arrays:
        for key in ("l0_by_position", "l0_patch_grid", "feature_density"):
            df[key] = [arrays.get(f"{n}/{key}") for n in df["name"]]
    return df


def terminal_summary(df: Any) -> str:
    """A few lines for the terminal, one per SAE (the wide table stays in metrics.md / metrics.csv): explained
    variance, L0, dead features, and the CE recovered by the splice, or why there is no such number; the field's
    measures when taken (with their 95% intervals over features)."""
    import math

    def num(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    lines = []
    for _, row in df.iterrows():
        parts = [f"EV {num(row.get('explained_variance_all')):.3f}", f"L0 {num(row.get('l0_all')):.1f}"]
        if math.isfinite(num(row.get("dead_fraction"))):
            parts.append(f"dead {100 * num(row.get('dead_fraction')):.0f}%")
        recovered, clean, ablated = (
            num(row.get(k)) for k in ("ce_recovered_mean", "ce_clean", "ce_mean_abl")
        )
        if math.isfinite(recovered):
            parts.append(f"CE recovered {recovered:.3f} (vs mean ablation)")
        elif math.isfinite(clean) and math.isfinite(ablated):
            parts.append(f"CE recovered: none to measure (mean-ablating the hook gives CE {ablated:.3f}, no worse "
                         f"than clean {clean:.3f})")  # fmt: skip
        for key, label in (("ms_top16", "monosemanticity (top-16)"), ("ms_full", "monosemanticity (full)"),
                           ("localisation", "localisation (Moran's I)"), ("sparse_probing_auc", "probing AUC")):  # fmt: skip
            if math.isfinite(num(row.get(key))):
                lo, hi = num(row.get(f"{key}_lo")), num(row.get(f"{key}_hi"))
                interval = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
                parts.append(f"{label} {num(row.get(key)):.3f}{interval}")
        lines.append(f"{row['name']}: " + ", ".join(parts))
    return "\n".join(lines)
