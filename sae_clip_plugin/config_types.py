"""Type checks for configuration dataclasses read from YAML, JSON or the command line.

Why: a value of the wrong type is otherwise taken at its truthiness or compared late with a confusing
error (`overwrite_output: "false"` is true; YAML reads `1e6` as the string "1e6"). Each field's
annotation is the contract; a mismatch names the field, the value and what to write instead.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Union

_SIMPLE = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "a mapping"
    return _SIMPLE.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(matches, value as stored); integral floats become ints, ints become floats, nothing else changes."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return type(value) is bool, value
    if tp is int:
        if type(value) is int:
            return True, value
        if type(value) is float and math.isfinite(value) and value.is_integer():
            return True, int(value)
        return False, value
    if tp is float:
        return (type(value) in (int, float), float(value)) if type(value) in (int, float) else (False, value)
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        (item,) = typing.get_args(tp)[:1]
        out = []
        for v in value:
            ok, v = _coerce(v, item)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def _checked(name: str, value: Any, tp: Any) -> Any:
    """`value` as stored for annotation `tp` (see `_coerce`), else a TypeError naming `name` and the fix."""
    ok, coerced = _coerce(value, tp)
    if not ok:
        hint = ""
        if isinstance(value, str) and tp is not str:
            hint = " (a quoted value is text: write it without quotes; YAML reads 1e6 as text, write 1000000)"
        raise TypeError(f"{name} must be {_describe(tp)}, got {value!r} ({type(value).__name__}){hint}")
    return coerced


def check_field_types(obj: Any, prefix: str | None = None) -> None:
    """Check (and normalise, see `_coerce`) every field of dataclass `obj` against its annotation.

    `prefix` names the group in messages (`logger.log_to_wandb`); default: the class name.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        coerced = _checked(f"{prefix or type(obj).__name__}.{f.name}", value, hints[f.name])
        if coerced is not value:
            setattr(obj, f.name, coerced)


def check_mapping_types(values: dict[str, Any], owner: type, prefix: str) -> dict[str, Any]:
    """The keyword arguments `values` meant for dataclass `owner`, checked as its fields are (unknown keys refused).

    For nested groups given as a mapping (`sae: {k: 32}`): the same contract as top-level fields, so
    `rescale_acts_by_decoder_norm: "false"` is refused instead of taken as true.
    """
    hints = typing.get_type_hints(owner)
    names = {f.name for f in dataclasses.fields(owner)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{prefix} option(s) {unknown} do not exist; valid: {sorted(names)}")
    return {key: _checked(f"{prefix}.{key}", value, hints[key]) for key, value in values.items()}


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:  # fmt: skip
    """A finite number within [low, high] (open ends when asked), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {lo or '(-inf'}, {hi or 'inf)'}, got {value!r}")
