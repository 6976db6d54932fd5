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


def current_umask() -> int:
    """The process umask (read by setting and restoring it: Python has no getter before 3.13's os API)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give `path` the permissions a plain open()/mkdir() would have (mkstemp/mkdtemp make them private)."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A temporary folder in `parent` (same file system, so renames are atomic) with umask permissions."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    honour_umask(tmp)
    return tmp


def replace_files(src_dir: Path, dst_dir: Path, last: tuple[str, ...] = ()) -> list[Path]:
    """Move every file of `src_dir` into `dst_dir`, each by one atomic rename; other files of `dst_dir` stay.

    Why: a result folder may also hold things the user put there (a cache, checkpoints, notes); replacing
    the folder as a whole would delete them. The files named in `last` (the one that makes the folder
    loadable, e.g. cfg.json) are removed from `dst_dir` first and moved in last, so a kill half-way leaves a
    folder that does not load, never one that mixes the old files with the new.
    """
    dst_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(src_dir.iterdir(), key=lambda p: (p.name in last, p.name))
    for src in files:
        if src.is_dir():
            raise IsADirectoryError(f"replace_files moves files only; {src} is a folder")
    for name in last:
        if (src_dir / name).exists():
            (dst_dir / name).unlink(missing_ok=True)
    moved = []
    for src in files:
        honour_umask(src)  # some writers (safetensors) create private 0600 files
        os.replace(src, dst_dir / src.name)
        moved.append(dst_dir / src.name)
    return moved


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file next to `path` (same suffix), then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        honour_umask(tmp)
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
