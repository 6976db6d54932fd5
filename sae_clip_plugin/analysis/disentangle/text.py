"""Disentanglement results in words: table cells with intervals, and the verdict with its bar spelled out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TABLE_KEYS = {
    "typographic": ("clean_acc", "attacked_acc", "delta_clean_acc", "delta_attacked_acc"),
    "groups": ("worst_group_acc", "mean_group_acc", "delta_worst_group_acc", "delta_mean_group_acc"),
}
INTERVAL_NOTE = (
    "Accuracies in percent with 95% intervals (stratified bootstrap over images; differences paired on the same "
    "images)."
)


def summary_cells(row: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """One table row's cells: accuracies and signed differences in percent, each with its 95% interval."""
    return [format_with_interval(row.get(k), row, k, signed=k.startswith("delta_")) for k in keys]


def verdict_text(s: dict[str, Any], kind: str) -> str:
    """What happened, then the bar (defined here) and whether each condition meets it."""
    main = "attacked_acc" if kind == "typographic" else "worst_group_acc"
    label = "attacked accuracy" if kind == "typographic" else "worst-group accuracy"
    sae = s["sae"]
    text = (f"SAE suppression moved {label} {100 * s['none'][main]:.1f} -> {100 * sae[main]:.1f} "
            f"({format_with_interval(sae.get('delta_' + main), sae, 'delta_' + main, signed=True)} points)")  # fmt: skip
    if "vs_random" in sae:
        text += (f", {100 * sae['vs_random']:+.1f} [{100 * sae['vs_random_lo']:+.1f}, {100 * sae['vs_random_hi']:+.1f}] "
                 "points against the same number of random features")  # fmt: skip
    max_clean = 100 * s.get("max_clean_drop", 0.03)  # summaries written before it was recorded used 3 points
    bar = (
        f"attacked accuracy up by >= 20 points or >= half the attack's drop, <= {max_clean:g} points of clean "
        "accuracy lost, the gain's 95% interval above 0"
        if kind == "typographic"
        else "worst-group accuracy rises with its 95% interval above 0"
    ) + "; for SAE suppression also the paired interval against random features above 0"
    verdicts = [f"SAE suppression {'meets' if sae['meets_bar'] else 'does NOT meet'} it"]
    for name, what, yes, no in (("random", "random features", "meet", "do not meet"),
                                ("heads", "head ablation", "meets", "does not meet")):  # fmt: skip
        if name in s:
            verdicts.append(f"{what} {yes if s[name]['meets_bar'] else no} it")
    return f"{text}. The bar: {bar}. " + "; ".join(verdicts) + "."


def format_with_interval(
    value: float | None, row: Mapping[str, float], key: str, signed: bool = False
) -> str:
    """`59.0 [54.3, 63.7]` in percent (`+5.0 [+1.2, +8.8]` when `signed`); blank for a missing value."""
    if value is None or value != value:
        return ""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = fmt.format(100 * value)
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if lo is None or hi is None:
        return text
    return f"{text} [{fmt.format(100 * lo)}, {fmt.format(100 * hi)}]"
