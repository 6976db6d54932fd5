"""Command configs: one torch-free dataclass per command is the source of its settings, flags, help and defaults.

Each field is declared with `option(...)`: its default, a help text, and what the command line needs (a parser for
the value, choices, the help group, repeatable). `sae_clip_plugin.cli.options.add_config_flags` turns the fields
into argparse flags (`--max-images` for `max_images`), `from_namespace` reads them back, and `--config FILE` is a YAML /
JSON mapping of the same field names for every command (`sae-clip train` included: its config is
VisionSAERunnerConfig). A library user builds the same dataclass in Python and calls the command's library entry
point with it, which is what the CLI does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sae_clip_plugin.config_types import check_field_types

T = TypeVar("T")


def option(
    default: Any = None,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[Any] | None = None,
    group: str = "options",
    repeat: bool = False,
    nargs: str | None = None,
    metavar: str | None = None,
    required: bool = False,
    flag: str | None = None,
) -> Any:
    """A config field and its flag: `parse` turns the typed text into the value (default: from the annotation);
    `repeat` makes a repeatable flag collecting a list; `nargs="+"` one flag taking several values; `flag` the flag's
    name when it is not the field's (VisionSAERunnerConfig keeps sae_lens' field names behind shared flags)."""
    metadata = {"help": help, "parse": parse, "choices": choices, "group": group, "repeat": repeat,
                "nargs": nargs, "metavar": metavar, "required": required, "flag": flag}  # fmt: skip
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


class CommandConfig:
    """Mixin of the command config dataclasses: checked types, dict round trip, reading an argparse namespace."""

    def __post_init__(self) -> None:
        check_field_types(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{unknown} are not settings of {cls.__name__}; valid: {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_namespace(cls: type[T], namespace: Any) -> T:
        """The config the parsed flags describe (flags missing from the namespace keep their defaults)."""
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = getattr(namespace, f.name, None)
            if (
                value is not None or f.default is None
            ):  # a repeatable flag given no times keeps its default []
                values[f.name] = value
        return cls(**values)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- value parsers of flags (argparse calls them on the typed text; ArgumentTypeError is its one-line message)


def positive_int(text: str) -> int:
    """A count: 0 or a negative number is refused when the flags are read.

    Why: `--n-select 0` used to fall back to the default (300) silently.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1 (leave the flag out for the default)")
    return value


def token_spec(text: str) -> str | list[int]:
    """all | cls | patches, or positions counted from 0 (the CLS token); a negative position is refused.

    Why: `--tokens -1` used to steer the last patch, which a user meaning "none" or "the default" never asked for.
    """
    if not (text[:1].isdigit() or text.startswith("-")):
        return text
    try:
        positions = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: positions are whole numbers, e.g. 0,5,9") from None
    negative = [p for p in positions if p < 0]
    if negative:
        raise argparse.ArgumentTypeError(
            f"position(s) {negative}: positions count from 0 (the CLS token); write the position itself "
            "(the last patch of a 50-token ViT-B/32 is 49), or all | cls | patches"
        )
    return positions


def finite_numbers(text: str) -> list[float]:
    """A comma list of finite numbers (checked when the flags are read, not after the main run)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma list of numbers, e.g. 0,50,150"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a finite number")
    return values
