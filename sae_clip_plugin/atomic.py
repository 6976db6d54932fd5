"""Atomic file writes: a temporary file beside the target, then one rename.

An interrupted job never leaves a half-written file under the final name, which is what lets every
long job of the package (caches, SAE folders, reports, figures, weights) resume by trusting the files
that exist.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file next to `path` (same suffix), then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(
    path: str | os.PathLike, data: Any, indent: int | None = 2, default: Callable[[Any], Any] | None = None
) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, default=default))
