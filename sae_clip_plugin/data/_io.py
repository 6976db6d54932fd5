"""Small file helpers shared by the dataset loaders: image discovery, lazy PIL loading, atomic image writes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from sae_clip_plugin.atomic import atomic_write

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
