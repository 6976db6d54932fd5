"""Small file helpers shared by the dataset loaders: image discovery, lazy PIL loading, atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a visible file with a common image extension (hidden files such as ._foo.jpg are skipped)."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files of `folder` (sorted so datasets are ordered the same on every machine)."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (no dangling file handle) and convert it to RGB."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"image file {path} is missing; check the dataset root folder and that the download was complete"
        ) from e


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` on a temporary file next to `path`, then rename it into place.

    An interrupted job never leaves a half-written file under the final name, which is what lets
    writers resume by skipping the files that already exist.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_image_atomic(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> None:
    """Save a PIL image atomically; the format comes from the final name's extension."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image extension in {path}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **save_kwargs))


def require_columns(columns: Iterable[str], required: Iterable[str], what: str, fix: str) -> None:
    """Raise a ValueError naming the missing columns of a table and how to fix it."""
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing} (has {sorted(have)}); {fix}")
