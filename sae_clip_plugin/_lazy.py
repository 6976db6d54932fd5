"""Lazy package exports (PEP 562): a name is imported from its module on first use.

Why: `sae-clip --help` and argument errors should answer in about a second, and importing torch,
open_clip and transformer_lens takes many. Packages list their public names here instead of importing
them; `from package import Name` works exactly as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`, whose public `name` lives in module `exports[name]`."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            module = exports[name]
            return getattr(importlib.import_module(module if "." in module else f"{package}.{module}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
