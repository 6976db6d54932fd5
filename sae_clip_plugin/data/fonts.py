"""Fonts for typographic rendering: Pillow's bundled scalable font, user .ttf/.otf files, system fonts."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import ImageFont, features

DEFAULT_FONT = (
    "default"  # Pillow's bundled Aileron Regular (ImageFont.load_default(size=...)); ASCII glyphs only
)

_SYSTEM_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.fonts",
    "~/.local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "~/Library/Fonts",
    "C:/Windows/Fonts",
)


def find_system_fonts(dirs: Iterable[str | os.PathLike] = _SYSTEM_FONT_DIRS) -> list[str]:
    """Sorted .ttf/.otf files under the usual font folders (differs between machines: record what was used)."""
    found: set[str] = set()
    for d in dirs:
        root = Path(d).expanduser()
        if root.is_dir():
            found.update(
                str(p) for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf") and p.is_file()
            )
    return sorted(found)


@functools.lru_cache(maxsize=512)
def load_font(spec: str, size: int) -> ImageFont.FreeTypeFont:
    """A scalable font at `size` px: `spec` is "default" or a .ttf/.otf path (cached per process)."""
    if not features.check("freetype2"):
        raise RuntimeError(
            "Pillow was built without FreeType, so text cannot be drawn at a chosen size; "
            "install the official Pillow wheel (pip install --force-reinstall pillow)"
        )
    if spec == DEFAULT_FONT:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(spec, size=size)


def resolve_fonts(fonts: Sequence[str] | None, use_system_fonts: bool = True) -> list[str]:
    """The font list a generator samples from.

    `fonts=None`: Pillow's default font plus (if `use_system_fonts`) every loadable system font.
    Given fonts must all load, else a ValueError names the bad file; unloadable system fonts are skipped.
    """
    if fonts is not None:
        out = list(fonts)
        if not out:
            raise ValueError("fonts is empty; pass at least one font (e.g. ['default']) or None")
        for spec in out:
            try:
                load_font(spec, 20)
            except OSError as e:
                raise ValueError(
                    f"cannot load font {spec!r} ({e}); pass a .ttf/.otf path or 'default'"
                ) from e
        return out
    out = [DEFAULT_FONT]
    if use_system_fonts:
        for path in find_system_fonts():
            try:
                font = load_font(path, 20)
                if font.getbbox("Ag")[2] <= 0:
                    continue
            except OSError:
                continue
            out.append(path)
    return out
