"""Small file helpers shared by the dataset loaders: image discovery, lazy PIL loading, atomic image writes."""

from __future__ import annotations

import os
import warnings
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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_warned_12_bit: set[str] = set()


def png_depth(path: str | os.PathLike) -> tuple[int, int, int | None] | None:
    """(bit depth, colour type, significant bits from the sBIT chunk or None) of a PNG file; None for other files.

    Why: Pillow ignores sBIT, so 12-bit sensor data stored in a 16-bit PNG (sBIT 12) reads as values up to 4095
    of 65535, i.e. almost black. Only the chunks before the image data are read.
    """
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return None
        depth, colour, significant = 8, 0, None
        for _ in range(64):  # the header chunks; a crafted file cannot make this loop long
            head = f.read(8)
            if len(head) < 8:
                break
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"IDAT" or length > 1 << 20:
                break
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"IHDR" and len(data) >= 10:
                depth, colour = data[8], data[9]
            elif kind == b"sBIT" and data:  # one byte per channel; alpha's (last, if any) does not count
                significant = max(data[: 3 if colour in (2, 3, 6) else 1])
    return depth, colour, significant


def to_rgb(image: Image.Image, name: str = "image", significant_bits: int | None = None) -> Image.Image:
    """`image` as 8-bit RGB, rescaling high-bit-depth greyscale instead of clipping it.

    Why: Pillow's convert("RGB") clips 16-bit ("I;16", "I") and float ("F") pixels to 255, so a 16-bit PNG
    turns almost white. Integer images are read as 0..2**significant_bits - 1 (default 16 bits), float images as
    0..1; other ranges and NaN/inf pixels are refused with a message.
    """
    if image.mode == "RGB":
        return image
    if image.mode not in _HIGH_BIT_MODES:
        return image.convert("RGB")
    array = np.asarray(image, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has NaN or inf pixel values; fix or remove the file")
    low, high = float(array.min()), float(array.max())
    top = 1.0 if image.mode == "F" else float(2 ** (significant_bits or 16) - 1)
    if low < 0 or high > top:
        raise ValueError(
            f"{name} is a {image.mode!r} image with values in [{low:g}, {high:g}]; only 0..{top:g} is understood "
            "for this mode: convert it to 8-bit RGB first"
        )
    grey = np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _significant_bits(path: str | os.PathLike, image: Image.Image) -> int | None:
    """The bits a 16-bit PNG's values use: its sBIT chunk, else 12 when every value fits in 12 bits (said once).

    16-bit colour PNGs reach us with only their top 8 bits (Pillow has no 48-bit mode): refused when the data
    uses fewer than 16 bits, since the top byte of 12-bit data holds 4 bits of it.
    """
    depth = png_depth(path)
    if depth is None or depth[0] != 16:
        return None
    _, colour, significant = depth
    if colour in (2, 6):
        if (significant or 16) < 16 or (significant is None and np.asarray(image).max() <= 15):
            raise ValueError(
                f"image file {path} is a 16-bit colour PNG holding {significant or 12}-bit data; Pillow reads only "
                "its top 8 bits (at most 4 of the data's): rescale it to 8-bit RGB (value * 255 / "
                f"{2 ** (significant or 12) - 1}) with a tool that reads 16-bit PNGs, e.g. OpenCV or imageio"
            )
        return None
    if significant is None and image.mode in _HIGH_BIT_MODES and np.asarray(image).max() <= 4095:
        if not _warned_12_bit:  # once per process: a folder of such files would repeat it per image
            warnings.warn(
                f"{path}: a 16-bit PNG whose values all fit in 12 bits and which has no sBIT chunk is read as 12-bit "
                "data (0..4095 -> 0..255), as sensors write it; add an sBIT chunk of 16 if it is a dark 16-bit image",
                stacklevel=3,
            )
        _warned_12_bit.add(str(path))
        return 12
    return significant


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (no dangling file handle) and convert it to 8-bit RGB (see `to_rgb`)."""
    try:
        with Image.open(path) as im:  # convert() copies, so the result outlives the closed file
            # camera photos store their rotation in EXIF: show the image the way viewers (and the labels) see it
            upright = ImageOps.exif_transpose(im)
            bits = _significant_bits(path, upright) if im.format == "PNG" else None
            if upright.mode == "RGB":
                return upright.convert("RGB")
            return to_rgb(upright, name=f"image file {path}", significant_bits=bits)
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
