"""Small file helpers shared by the dataset loaders: image discovery, lazy PIL loading, atomic image writes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

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


_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """`image` as 8-bit RGB, rescaling high-bit-depth greyscale instead of clipping it.

    Why: Pillow's convert("RGB") clips 16-bit ("I;16", "I") and float ("F") pixels to 255, so a 16-bit PNG
    turns almost white. 16-bit and 32-bit integer images are read as 0..65535, float images as 0..1; other
    ranges and NaN/inf pixels are refused with a message.
    """
    if image.mode == "RGB":
        return image
    if image.mode not in _HIGH_BIT_MODES:
        return image.convert("RGB")
    array = np.asarray(image, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has NaN or inf pixel values; fix or remove the file")
    low, high = float(array.min()), float(array.max())
    top = 1.0 if image.mode == "F" else 65535.0
    if low < 0 or high > top:
        raise ValueError(
            f"{name} is a {image.mode!r} image with values in [{low:g}, {high:g}]; only 0..{top:g} is understood "
            "for this mode: convert it to 8-bit RGB first"
        )
    grey = np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (no dangling file handle) and convert it to 8-bit RGB (see `to_rgb`)."""
    try:
        with Image.open(path) as im:  # convert() copies, so the result outlives the closed file
            # camera photos store their rotation in EXIF: show the image the way viewers (and the labels) see it
            upright = ImageOps.exif_transpose(im)
            return (
                upright.convert("RGB")
                if upright.mode == "RGB"
                else to_rgb(upright, name=f"image file {path}")
            )
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
