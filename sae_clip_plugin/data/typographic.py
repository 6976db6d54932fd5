"""Typographic-attack image folders: RTA-100, the PAINT real typographic set, and generated sets.

File names carry the labels: `label=<true class>_text=<written word>.<ext>` (RTA-100, PAINT).
The class set is the union of true labels and written words, prompts use "a photo of a {}.".
Sets written by `sae_clip_plugin.data.typo_generator` extend the scheme with a pair id,
`label=<true>_text=<word>_id=<id>.<ext>`, and write the clean twin as `label=<true>_id=<id>.<ext>`
(no text), so several images may share a (class, word) pair and twins can be matched.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ._io import IMAGE_EXTENSIONS, list_images
from .labelled import DEFAULT_TEMPLATE, LabelledImageDataset

TYPOGRAPHIC_TEMPLATE = DEFAULT_TEMPLATE
MANIFEST_NAME = "typographic_manifest.json"
ATTACK_GROUPS = ("clean", "attacked")
NO_TEXT = "(no text)"

_NAME_RE = re.compile(r"^label=(?P<label>.+?)(?:_text=(?P<text>.*?))?(?:_id=(?P<id>[^=]*))?$")


@dataclass(frozen=True)
class TypographicName:
    """The labels parsed from one file name; `text` is "" when nothing is written (a clean image)."""

    label: str
    text: str
    pair_id: str = ""

    @property
    def attacked(self) -> bool:
        """True when a word other than the true class is written on the image."""
        return bool(self.text) and self.text != self.label


def parse_typographic_name(filename: str | os.PathLike) -> TypographicName:
    """Parse `label=<true>_text=<word>[_id=<id>].<ext>` (the extension is optional).

    Underscores and spaces inside class names are fine ("label=coffee_mug_text=cup.jpg").
    """
    stem = Path(filename).stem if Path(filename).suffix.lower() in IMAGE_EXTENSIONS else Path(filename).name
    m = _NAME_RE.match(stem)
    if m is None or "_text=" in m.group("label"):  # an empty true label leaves "_text=..." in the label
        raise ValueError(
            f"malformed typographic file name {Path(filename).name!r}: expected "
            "'label=<true class>_text=<written word>.<ext>' (RTA-100 / PAINT naming); rename the file or "
            "move it out of the folder"
        )
    return TypographicName(m.group("label"), m.group("text") or "", m.group("id") or "")


def format_typographic_name(
    label: str, text: str = "", pair_id: str | int | None = None, ext: str = ".png"
) -> str:
    """Inverse of `parse_typographic_name`; refuses names that would not parse back to the same labels."""
    for what, value in (("class name", label), ("written word", text)):
        if any(bad in value for bad in ("/", "\\", "_text=", "_id=", "\0")) or value.startswith("."):
            raise ValueError(f"{what} {value!r} cannot be stored in a file name; rename the class")
    if not label:
        raise ValueError("an empty class name cannot be stored in a file name")
    name = f"label={label}"
    if text:
        name += f"_text={text}"
    if pair_id is not None and pair_id != "":
        name += f"_id={pair_id}"
    ext = ext if ext.startswith(".") else "." + ext
    return name + ext


def _read_manifest_classnames(folder: Path) -> list[str] | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    return list(json.loads(path.read_text(encoding="utf-8"))["classnames"])


def load_typographic_folder(
    folder: str | os.PathLike,
    *,
    recursive: bool | None = None,
    classnames: Sequence[str] | None = None,
    group_by: str = "attack",
    templates: Sequence[str] = (TYPOGRAPHIC_TEMPLATE,),
    transform: Callable[[Image.Image], Any] | None = None,
    name: str | None = None,
) -> LabelledImageDataset:
    """Images named `label=<true>_text=<word>.<ext>`; label = true class.

    `recursive=None` searches subfolders only for a generated set (one with a manifest, whose images
    sit in attacked/ and clean/). `classnames` fixes the class order (default: the manifest of a generated set, else the sorted union of
    true labels and written words). `group_by="attack"`: groups clean / attacked (a word other than the
    true class is written); `group_by="text"`: one group per written word plus "(no text)".
    `extras`: file, text (written word or ""), text_label (its class index or -1), pair_id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"typographic folder {folder} does not exist; pass the folder holding the images"
        )
    if recursive is None:
        recursive = (folder / MANIFEST_NAME).is_file()
    files = list_images(folder, recursive=recursive)
    if not files:
        hint = " (images in subfolders: pass recursive=True)" if not recursive else ""
        raise ValueError(
            f"no image files in {folder}{hint}; expected files named label=<class>_text=<word>.jpg"
        )
    parsed = [parse_typographic_name(f) for f in files]
    if classnames is None:
        classnames = _read_manifest_classnames(folder)
    if classnames is None:
        classnames = sorted({p.label for p in parsed} | {p.text for p in parsed if p.text})
    classnames = list(classnames)
    index = {c: i for i, c in enumerate(classnames)}
    unknown = sorted(
        {p.label for p in parsed if p.label not in index}
        | {p.text for p in parsed if p.text and p.text not in index}
    )
    if unknown:
        raise ValueError(
            f"{folder}: labels/words {unknown[:5]} are not in classnames; add them or omit classnames"
        )
    labels = [index[p.label] for p in parsed]
    text_labels = [index[p.text] if p.text else -1 for p in parsed]
    if group_by == "attack":
        group_names = list(ATTACK_GROUPS)
        groups = [int(p.attacked) for p in parsed]
    elif group_by == "text":
        group_names = [*classnames, NO_TEXT]
        groups = [t if t >= 0 else len(classnames) for t in text_labels]
    else:
        raise ValueError(f"unknown group_by {group_by!r}; use 'attack' or 'text'")
    return LabelledImageDataset(
        [str(f) for f in files],
        labels,
        groups,
        classnames,
        group_names,
        transform=transform,
        templates=templates,
        extras={
            "file": [str(f.relative_to(folder)) for f in files],
            "text": [p.text for p in parsed],
            "text_label": text_labels,
            "pair_id": [p.pair_id for p in parsed],
        },
        name=name or folder.name,
        info={"root": str(folder), "format": "typographic_folder", "group_by": group_by},
    )


def _subfolder(root: Path, rel: str) -> Path:
    return root / rel if (root / rel).is_dir() else root


def load_rta100(root: str | os.PathLike, **kwargs: Any) -> LabelledImageDataset:
    """RTA-100 (Azuma & Matsui, Defense-Prefix): `root/ours/data/label=..._text=....<ext>`, or the image folder itself."""
    kwargs.setdefault("name", "rta100")
    return load_typographic_folder(_subfolder(Path(root), "ours/data"), **kwargs)


def load_paint_typographic(root: str | os.PathLike, **kwargs: Any) -> LabelledImageDataset:
    """PAINT's real typographic set: `root/typographic_real_data_from_PAINT/typographic_attacks/`, or that folder."""
    kwargs.setdefault("name", "paint-typographic")
    return load_typographic_folder(
        _subfolder(Path(root), "typographic_real_data_from_PAINT/typographic_attacks"), **kwargs
    )
