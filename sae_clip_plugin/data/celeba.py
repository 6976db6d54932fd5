"""CelebA with a target and a spurious attribute (used in the paper's disentanglement experiments; arXiv 2504.08729).

On-disk format (the official release, also what torchvision downloads into `<root>/celeba`):
`img_align_celeba/*.jpg`; `list_attr_celeba.txt` = a count line, a line of 40 attribute names, then
`<file> <+1/-1 x 40>` rows; `list_eval_partition.txt` = `<file> <0 train | 1 val | 2 test>` rows.
The Kaggle re-upload (`list_attr_celeba.csv`, `list_eval_partition.csv`, images nested one level deeper
in `img_align_celeba/img_align_celeba/`) is read too.

Labels: class 1 = target attribute present (default "Male": 0 woman, 1 man); spurious 1 = spurious attribute
present (default "Blond_Hair"); group = 2 * label + spurious, named "<class>, <spurious>".
"""

from __future__ import annotations

import csv
import difflib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .labelled import DEFAULT_TEMPLATE, LabelledImageDataset

SPLITS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}

# Readable names for the (absent, present) values of common attributes; others get ("not <attr>", "<attr>").
ATTRIBUTE_NAMES: dict[str, tuple[str, str]] = {
    "Male": ("woman", "man"),
    "Blond_Hair": ("non-blond", "blond"),
    "Black_Hair": ("non-black-haired", "black-haired"),
    "Eyeglasses": ("without glasses", "with glasses"),
    "Smiling": ("not smiling", "smiling"),
    "Young": ("old", "young"),
}


def attribute_value_names(attribute: str) -> tuple[str, str]:
    """(absent, present) names of a CelebA attribute, e.g. Male -> ("woman", "man")."""
    if attribute in ATTRIBUTE_NAMES:
        return ATTRIBUTE_NAMES[attribute]
    word = attribute.replace("_", " ").lower()
    return f"not {word}", word


def _find_celeba_dir(root: Path) -> Path:
    for cand in (root, root / "celeba", root / "CelebA"):
        if (cand / "list_attr_celeba.txt").is_file() or (cand / "list_attr_celeba.csv").is_file():
            return cand
    raise FileNotFoundError(
        f"CelebA: list_attr_celeba.txt not found in {root} (nor in {root}/celeba); pass the folder that holds "
        "img_align_celeba/, list_attr_celeba.txt and list_eval_partition.txt (the official CelebA release)"
    )


def _image_dir(base: Path) -> Path:
    img = base / "img_align_celeba"
    if (img / "img_align_celeba").is_dir():  # Kaggle layout
        return img / "img_align_celeba"
    if not img.is_dir():
        raise FileNotFoundError(
            f"CelebA: image folder {img} not found; unzip img_align_celeba.zip into {base}"
        )
    return img


def read_celeba_attributes(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse `list_attr_celeba.txt` (or the Kaggle .csv) into (file names, attribute names, int8 matrix).

    Values are +1 (present) / -1 (absent); the matrix is [n_images, n_attributes].
    """
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            raise ValueError(f"{path} is empty; re-download list_attr_celeba.csv")
        names = rows[0][1:]
        files = [r[0] for r in rows[1:]]
        values = [" ".join(r[1:]) for r in rows[1:]]
    else:
        with open(path) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
        if len(lines) < 2:
            raise ValueError(
                f"{path} is too short: expected a count line, a line of attribute names and one row per image"
            )
        names = lines[1].split()
        split = [ln.split(None, 1) for ln in lines[2:]]
        files = [t[0] for t in split]
        values = [t[1] if len(t) > 1 else "" for t in split]
        try:
            declared = int(lines[0].split()[0])
        except ValueError as e:
            raise ValueError(f"{path}: first line must be the image count, got {lines[0]!r}") from e
        if declared != len(files):
            raise ValueError(
                f"{path}: header says {declared} images but {len(files)} rows follow; the file is truncated"
            )
    # One C-level parse of all values (a Python loop over 8M tokens takes seconds); on any
    # mismatch fall back to a per-row check that names the bad row.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            flat = np.fromstring(" ".join(values), dtype=np.int8, sep=" ") if values else np.zeros(0, np.int8)
        except ValueError:  # numpy >= 2 refuses non-integer text: the per-row check names it
            flat = None
    if flat is None or flat.size != len(files) * len(names):
        _raise_for_bad_row(path, files, names, values)
    matrix = flat.reshape(len(files), len(names))
    if not np.isin(matrix, (-1, 0, 1)).all():
        raise ValueError(f"{path}: attribute values must be +1/-1 (0 is read as absent)")
    return files, names, matrix


def _raise_for_bad_row(path: Path, files: list[str], names: list[str], values: list[str]) -> None:
    """Name the first row whose values are not one +1/-1/0 integer per attribute."""
    for file, row in zip(files, values, strict=True):
        tokens = row.replace(",", " ").split()
        if len(tokens) != len(names):
            raise ValueError(
                f"{path}: row for {file} has {len(tokens)} values, expected {len(names)} "
                "(one +1/-1 per attribute); the file is malformed"
            )
        bad = [(n, t) for n, t in zip(names, tokens, strict=True) if t not in ("1", "+1", "-1", "0")]
        if bad:
            raise ValueError(
                f"{path}: row for {file} has {bad[0][0]}={bad[0][1]!r}; attribute values must be +1/-1 "
                "(re-download the file if it is damaged)"
            )
    raise ValueError(f"{path}: attribute values must be +1/-1 integers")


def read_celeba_partition(path: str | os.PathLike) -> dict[str, int]:
    """Parse `list_eval_partition.txt` (or .csv) into {file name: 0 train | 1 val | 2 test}."""
    path = Path(path)
    out: dict[str, int] = {}
    with open(path, newline="") as f:
        if path.suffix == ".csv":
            reader = csv.reader(f)
            next(reader, None)  # header image_id,partition
            rows = list(reader)
        else:
            rows = [ln.split() for ln in f.read().splitlines() if ln.strip()]
    for row in rows:
        if len(row) != 2 or row[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}: malformed row {row!r}; expected '<file name> <0|1|2>'")
        out[row[0]] = int(row[1])
    return out


def _resolve_attribute(name: str, available: Sequence[str]) -> int:
    if name in available:
        return list(available).index(name)
    lowered = {a.lower(): i for i, a in enumerate(available)}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, available, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise KeyError(f"unknown CelebA attribute {name!r}.{hint} Available: {', '.join(available)}")


def _split_rows(base: Path, files: list[str], split: str | int | None) -> np.ndarray:
    """Indices into `files` of the images of `split` ("all" or None: every image), by the partition file
    (list_eval_partition.txt, or the Kaggle .csv)."""
    if split in ("all", None):
        return np.arange(len(files))
    code = SPLITS.get(split) if isinstance(split, str) else int(split)
    if code not in (0, 1, 2):
        raise ValueError(f"unknown CelebA split {split!r}; use 'train', 'val', 'test', 'all' or 0/1/2")
    part_path = base / "list_eval_partition.txt"
    if not part_path.is_file() and (base / "list_eval_partition.csv").is_file():
        part_path = base / "list_eval_partition.csv"
    if not part_path.is_file():
        raise FileNotFoundError(
            f"CelebA: {part_path} not found; put list_eval_partition.txt next to list_attr_celeba.txt "
            "or use split='all'"
        )
    partition = read_celeba_partition(part_path)
    missing = [f for f in files if f not in partition]
    if missing:
        raise ValueError(
            f"{part_path} has no split for {len(missing)} image(s) such as {missing[0]}; "
            "the attribute and partition files come from different releases"
        )
    return np.asarray([i for i, f in enumerate(files) if partition[f] == code], dtype=np.int64)


def _value_names(
    classnames: Sequence[str] | None, spurious_names: Sequence[str] | None, target: str, spurious: str
) -> tuple[list[str], list[str]]:
    """(class names, spurious names), each (absent, present): the given ones, else the attributes' readable
    names."""
    classnames = list(classnames) if classnames is not None else list(attribute_value_names(target))
    spurious_names = (
        list(spurious_names) if spurious_names is not None else list(attribute_value_names(spurious))
    )
    if len(classnames) != 2 or len(spurious_names) != 2:
        raise ValueError(
            "classnames and spurious_names take two names each: (attribute absent, attribute present)"
        )
    return classnames, spurious_names


def _image_paths(base: Path, files: list[str], keep: np.ndarray, attr_path: Path) -> list[str]:
    """The image files of the kept rows (the first checked to exist, so a missing unzip fails here)."""
    img_dir = _image_dir(base)
    sources = [str(img_dir / files[i]) for i in keep]
    if sources and not Path(sources[0]).is_file():
        raise FileNotFoundError(
            f"CelebA: {sources[0]} listed in {attr_path.name} is missing; unzip img_align_celeba.zip into {base}"
        )
    return sources


def load_celeba(
    root: str | os.PathLike,
    split: str | int = "val",
    target: str = "Male",
    spurious: str = "Blond_Hair",
    *,
    classnames: Sequence[str] | None = None,
    spurious_names: Sequence[str] | None = None,
    balanced: bool = False,
    n_per_group: int | None = None,
    seed: int = 0,
    transform: Callable[[Image.Image], Any] | None = None,
) -> LabelledImageDataset:
    """CelebA images of one split with class = `target` attribute and group = (class, `spurious` attribute).

    `split`: "train" | "val" | "test" | "all" or 0/1/2. `balanced=True` keeps the same number of images
    per group (`n_per_group`, default the smallest group: the paper's val set has 182 per group, 728 images).
    `extras["spurious"]` holds the spurious bit of each image; `info["spurious_names"]` its names.
    """
    base = _find_celeba_dir(Path(root))
    attr_path = base / "list_attr_celeba.txt"
    if not attr_path.is_file():
        attr_path = base / "list_attr_celeba.csv"
    files, names, matrix = read_celeba_attributes(attr_path)
    ti, si = _resolve_attribute(target, names), _resolve_attribute(spurious, names)
    target, spurious = names[ti], names[si]
    if ti == si:
        raise ValueError(
            f"target and spurious attribute are both {target!r}; choose two different attributes"
        )

    keep = _split_rows(base, files, split)
    labels = (matrix[keep, ti] == 1).astype(np.int64)
    spur = (matrix[keep, si] == 1).astype(np.int64)
    classnames, spurious_names = _value_names(classnames, spurious_names, target, spurious)
    ds = LabelledImageDataset(
        _image_paths(base, files, keep, attr_path),
        labels,
        2 * labels + spur,
        classnames,
        [f"{c}, {s}" for c in classnames for s in spurious_names],
        transform=transform,
        templates=(DEFAULT_TEMPLATE,),
        extras={"file": [files[i] for i in keep], "spurious": spur.tolist()},
        name=f"celeba-{split}",
        info={
            "root": str(base),
            "format": "celeba",
            "split": split,
            "target": target,
            "spurious": spurious,
            "spurious_names": spurious_names,
        },
    )
    if balanced:
        ds = ds.balanced_subset(n_per_group=n_per_group, seed=seed)
    return ds


def celeba_group_prompts(
    dataset: LabelledImageDataset,
    template: str = DEFAULT_TEMPLATE,
    spurious_words: Sequence[str] | None = None,
) -> list[str]:
    """One prompt per group, e.g. "a photo of a blond man." (group order of `dataset.group_names`).

    `spurious_words` are the adjectives for (absent, present); default the dataset's spurious names.
    An empty word gives the plain class prompt ("a photo of a man.").
    """
    words = list(spurious_words) if spurious_words is not None else list(dataset.info["spurious_names"])
    return [template.format(f"{w} {c}".strip()) for c in dataset.classnames for w in words]
