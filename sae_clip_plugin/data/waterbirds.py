"""Waterbirds (Sagawa et al.): bird type with a spurious background (used in the paper's disentanglement experiments; arXiv 2504.08729).

On-disk format (e.g. `waterbird_complete95_forest2water2/`, also the WILDS copy): `metadata.csv` with columns
img_filename (relative to the folder), y (0 land bird / 1 water bird), split (0 train / 1 val / 2 test),
place (0 land / 1 water). Group = 2 * y + place: landbird on land, landbird on water, waterbird on land,
waterbird on water.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ._io import require_columns
from .labelled import DEFAULT_TEMPLATE, LabelledImageDataset

SPLITS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
CLASSNAMES = ("landbird", "waterbird")
PLACE_NAMES = ("land", "water")


def _find_metadata(root: Path) -> Path:
    if (root / "metadata.csv").is_file():
        return root / "metadata.csv"
    if root.is_dir():
        subs = sorted(p for p in root.iterdir() if (p / "metadata.csv").is_file())
        if len(subs) == 1:
            return subs[0] / "metadata.csv"
    raise FileNotFoundError(
        f"Waterbirds: metadata.csv not found in {root}; pass the dataset folder (e.g. "
        "waterbird_complete95_forest2water2/) that holds metadata.csv and the image subfolders"
    )


def _int_field(row: dict[str, str], key: str, allowed: Sequence[int], path: Path, line: int) -> int:
    try:
        value = int(float(row[key]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} line {line}: column {key!r} must be an integer, got {row[key]!r}") from e
    if value not in allowed:
        raise ValueError(f"{path} line {line}: column {key!r} must be one of {list(allowed)}, got {value}")
    return value


def load_waterbirds(
    root: str | os.PathLike,
    split: str | int = "test",
    *,
    classnames: Sequence[str] = CLASSNAMES,
    place_names: Sequence[str] = PLACE_NAMES,
    balanced: bool = False,
    n_per_group: int | None = None,
    seed: int = 0,
    transform: Callable[[Image.Image], Any] | None = None,
) -> LabelledImageDataset:
    """Waterbirds images of one split ("train" | "val" | "test" | "all" or 0/1/2), label = bird, group = (bird, place)."""
    meta = _find_metadata(Path(root))
    base = meta.parent
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        require_columns(
            reader.fieldnames or [],
            ("img_filename", "y", "split", "place"),
            f"Waterbirds {meta}",
            "use the metadata.csv shipped with the dataset (columns img_filename, y, split, place)",
        )
        rows = list(reader)
    if split in ("all", None):
        code = None
    else:
        code = SPLITS.get(split) if isinstance(split, str) else int(split)
        if code not in (0, 1, 2):
            raise ValueError(
                f"unknown Waterbirds split {split!r}; use 'train', 'val', 'test', 'all' or 0/1/2"
            )
    sources, labels, places, files = [], [], [], []
    for line, row in enumerate(rows, start=2):
        s = _int_field(row, "split", (0, 1, 2), meta, line)
        if code is not None and s != code:
            continue
        labels.append(_int_field(row, "y", (0, 1), meta, line))
        places.append(_int_field(row, "place", (0, 1), meta, line))
        files.append(row["img_filename"])
        sources.append(str(base / row["img_filename"]))
    if not sources:
        raise ValueError(
            f"Waterbirds {meta}: no images in split {split!r}; check the split column or use split='all'"
        )
    if not Path(sources[0]).is_file():
        raise FileNotFoundError(
            f"Waterbirds: image {sources[0]} listed in metadata.csv is missing; extract the image folders next to it"
        )
    if len(classnames) != 2 or len(place_names) != 2:
        raise ValueError("classnames and place_names take two names each (index 0 land, 1 water)")
    group_names = [f"{c} on {p}" for c in classnames for p in place_names]
    ds = LabelledImageDataset(
        sources,
        labels,
        [2 * y + p for y, p in zip(labels, places, strict=True)],
        list(classnames),
        group_names,
        transform=transform,
        templates=(DEFAULT_TEMPLATE,),
        extras={"file": files, "place": places},
        name=f"waterbirds-{split}",
        info={"root": str(base), "format": "waterbirds", "split": split, "place_names": list(place_names)},
    )
    if balanced:
        ds = ds.balanced_subset(n_per_group=n_per_group, seed=seed)
    return ds
