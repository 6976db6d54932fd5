"""Disentanglement results in words: readable table headers, cells with intervals, the bar and a short headline.

The bar is defined once here (`bar_text`) and printed once per report; each task gets a one-sentence headline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TABLE_KEYS = {
    "typographic": ("clean_acc", "attacked_acc", "delta_clean_acc", "delta_attacked_acc"),
    "groups": ("worst_group_acc", "mean_group_acc", "delta_worst_group_acc", "delta_mean_group_acc"),
}
# what a reader sees for each key: accuracies in percent, changes in percentage points
COLUMN_NAMES = {
    "clean_acc": "clean %",
    "attacked_acc": "attacked %",
    "delta_clean_acc": "change in clean (points)",
    "delta_attacked_acc": "change in attacked (points)",
    "worst_group_acc": "worst group %",
    "mean_group_acc": "mean over groups %",
    "delta_worst_group_acc": "change in worst group (points)",
    "delta_mean_group_acc": "change in mean (points)",
}
INTERVAL_NOTE = (
    "Accuracies in percent with 95% intervals (stratified bootstrap over images; differences paired on the same "
    "images)."
)
CONDITION_NAMES = {
    "none": "no intervention",
    "sae": "SAE features suppressed",
    "random": "random features (same layer, k)",
    "heads": "attention heads ablated (CLS)",
}


def column_names(keys: Sequence[str]) -> list[str]:
    return [COLUMN_NAMES.get(k, k) for k in keys]


def summary_cells(row: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """One table row's cells: accuracies and signed differences in percent, each with its 95% interval."""
    return [format_with_interval(row.get(k), row, k, signed=k.startswith("delta_")) for k in keys]


def condition_rows(s: Mapping[str, Any], kind: str) -> list[list[Any]]:
    """The summary table's rows (condition, layer, setting, then TABLE_KEYS[kind] cells), shared by every report."""
    keys = TABLE_KEYS[kind]
    rows = [[CONDITION_NAMES["none"], "", "", *summary_cells(s["none"], keys)]]
    for name in ("sae", "random"):
        if name in s:
            rows.append(
                [CONDITION_NAMES[name], s[name]["layer"], f"k={s[name]['k']}", *summary_cells(s[name], keys)]
            )
    if "heads" in s:
        rows.append([CONDITION_NAMES["heads"], "", s["heads"]["heads"], *summary_cells(s["heads"], keys)])
    return rows


def bar_text(kind: str, max_clean_drop: float = 0.02) -> str:
    """The success bar of a task kind, in words (the one place it is defined; `evaluate.*_success` implement it)."""
    if kind == "typographic":
        return (
            "Typographic bar: attacked accuracy recovers at least half of the attack's drop (clean minus attacked "
            f"accuracy with no intervention), with the gain's 95% interval above 0, losing at most "
            f"{100 * max_clean_drop:g} points of clean accuracy; SAE suppression must also beat the same number of "
            "random features (paired 95% interval above 0)."
        )
    return (
        "Spurious-correlation bar: worst-group accuracy rises, with its 95% interval above 0; SAE suppression must "
        "also beat the same number of random features (paired 95% interval above 0)."
    )


def bars_text(summaries: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """The bar of each task kind among `(kind, summary)` pairs, once per kind in order of appearance: what a report
    states once above its tables."""
    kinds: dict[str, float] = {}
    for kind, summary in summaries:
        kinds.setdefault(kind, summary.get("max_clean_drop", 0.02))
    return " ".join(bar_text(kind, drop) for kind, drop in kinds.items())


def headline(s: Mapping[str, Any], kind: str) -> str:
    """One sentence per task: whether SAE suppression meets the bar, the main number, and the baselines' verdicts."""
    main = "attacked_acc" if kind == "typographic" else "worst_group_acc"
    label = "attacked" if kind == "typographic" else "worst group"
    sae = s["sae"]
    verdict = "meets the bar" if sae["meets_bar"] else "does not meet the bar"
    text = (
        f"SAE suppression (layer {sae['layer']}, k={sae['k']}) {verdict}: {label} {100 * s['none'][main]:.1f}% -> "
        f"{100 * sae[main]:.1f}% ({format_with_interval(sae.get('delta_' + main), sae, 'delta_' + main, True)} points"
    )
    if "vs_random" in sae:
        text += f"; {100 * sae['vs_random']:+.1f} [{100 * sae['vs_random_lo']:+.1f}, {100 * sae['vs_random_hi']:+.1f}] vs random"
    text += ")."
    others = [f"{what}: {'meets' if s[name]['meets_bar'] else 'does not'}" for name, what in
              (("random", "random features"), ("heads", "head ablation")) if name in s]  # fmt: skip
    return text + (" " + "; ".join(others) + "." if others else "")


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
