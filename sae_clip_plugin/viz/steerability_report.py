"""The written results of a steerability measurement: per-feature CSV, summary JSON and markdown, steering curves.

One writer for `sae-clip steerability` and the demo: <out>/<prefix>.csv (per feature: S, P, top concept, steerable,
polysemanticity), <prefix>_summary.json, <prefix>_summary.md, and with curves <prefix>_curves.csv / .png.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sae_clip_plugin.atomic import atomic_write_text


def write_steerability_result(
    result: Any, out_dir: str | os.PathLike, prefix: str = "steerability"
) -> dict[str, Path]:
    """`<prefix>.csv`, `<prefix>_summary.json` and `<prefix>_summary.md` of a SteerabilityResult, atomically."""
    out = Path(out_dir)
    files = {
        "table": (out / f"{prefix}.csv", result.table.to_csv(index=False)),
        "summary": (out / f"{prefix}_summary.json", json.dumps(result.summary, indent=2, default=str)),
        "markdown": (out / f"{prefix}_summary.md", result.to_markdown()),
    }
    for path, text in files.values():
        atomic_write_text(path, text)
    return {key: path for key, (path, _) in files.items()}


def write_steerability(run: Any, out_dir: str | os.PathLike, prefix: str | None = None) -> dict[str, Path]:
    """Everything a SteerabilityRun holds: the result's three files, and the curves' CSV and figure when measured."""
    prefix = prefix or run.config.prefix
    paths = write_steerability_result(run.result, out_dir, prefix)
    if run.curves is not None:
        from sae_clip_plugin.viz.steering_figures import save_steering_curves  # lazy: matplotlib

        paths.update(save_steering_curves(run.curves, Path(out_dir), prefix, run.config.threshold))
    return paths
