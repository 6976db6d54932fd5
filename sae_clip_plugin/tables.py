"""Table cells and markdown tables: the one formatter every report, CSV summary and command output uses.

Kept apart from viz/ (which draws) so that analysis code can write its summaries without importing figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def format_value(value: Any, digits: int = 3) -> str:
    """Table cell text, one format per kind: floats with `digits` decimals (one decimal from 100 up, so a
    column of ratios lines up), integers as they are, NaN/None empty, booleans as yes/no."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and abs(value) < 10 ** -max(digits, 1):  # would print as 0.000
            return f"{value:.2e}"
        return f"{value:.1f}" if abs(value) >= 100 and digits > 1 else f"{value:.{digits}f}"
    if isinstance(value, np.bool_):
        return "yes" if value else "no"
    if isinstance(value, np.floating):
        return format_value(float(value), digits)
    return str(value)


def column_cells(rows: Sequence[Sequence[Any]], digits: int = 3) -> list[list[str]]:
    """Cell texts with one format per column: a column of whole numbers prints them whole (16, not 16.000); a
    column reaching 100 prints one decimal throughout (226.6 and 67.5, not 226.6 and 67.457); else `digits`."""
    columns = list(zip(*rows, strict=True)) if rows else []
    formats = []
    for values in columns:
        numbers = [float(v) for v in values if _is_number(v) and math.isfinite(float(v))]
        if numbers and all(n.is_integer() for n in numbers) and any(_is_float(v) for v in values):
            formats.append(0)
        elif numbers and max(abs(n) for n in numbers) >= 100:
            formats.append(1)
        else:
            formats.append(digits)
    return [[format_value(v, formats[i]) if _is_float(v) else format_value(v, digits) for i, v in enumerate(row)]
            for row in rows]  # fmt: skip


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or _is_float(value)


def _is_float(value: Any) -> bool:
    return isinstance(value, (float, np.floating))


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """The project's one markdown table writer (cells as `column_cells` formats them; pipes escaped)."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in column_cells(rows, digits)]
    return "\n".join(lines)
