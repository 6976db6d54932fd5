"""SCAM (BLISS-e-V/SCAM): real, synthetic and attack-removed typographic images.

A Hugging Face `datasets` dataset with columns image, object_label, attack_word, type in
{SCAM (real attack), SynthSCAM (word rendered digitally), NoSCAM (the same photo with the note removed)}
(plus postit_area_pct and id, which are kept as extras when present). Label = object_label; the class
set is the union of object labels and attack words; prompts use "a photo of a {}.".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ._io import require_columns, to_rgb
from .labelled import DEFAULT_TEMPLATE, LabelledImageDataset
from .typographic import ATTACK_GROUPS, NO_TEXT

SCAM_HUB_NAME = "BLISS-e-V/SCAM"
SCAM_TYPES = ("NoSCAM", "SCAM", "SynthSCAM")
CLEAN_TYPE = "NoSCAM"
_REQUIRED = ("image", "object_label", "attack_word", "type")
_OPTIONAL_EXTRAS = ("id", "postit_area_pct")


class _RowImageLoader:
    """Loads row i's image from a `datasets.Dataset` (a class, not a lambda, so DataLoader workers can pickle it)."""

    def __init__(self, dataset: Any, column: str = "image") -> None:
        self.dataset = dataset.select_columns([column])
        self.column = column

    def __call__(self, row: int) -> Image.Image:
        image = self.dataset[int(row)][self.column]
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"column {self.column!r} holds {type(image).__name__}, not a PIL image; "
                "cast it with dataset.cast_column('image', datasets.Image())"
            )
        return to_rgb(image, name=f"row {row}")


def _open_dataset(source: Any, split: str) -> Any:
    import datasets  # lazy: datasets

    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise KeyError(
                f"SCAM DatasetDict has splits {list(source)}, not {split!r}; pass split=one of them"
            )
        return source[split]
    if isinstance(source, datasets.Dataset):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"SCAM source must be a datasets.Dataset, a local path or a hub name, got {type(source).__name__}"
        )
    path = Path(source)
    if path.exists():
        saved = (
            (path / "dataset_info.json").is_file()
            or (path / "dataset_dict.json").is_file()
            or (path / "state.json").is_file()
        )
        if saved:
            return _open_dataset(datasets.load_from_disk(str(path)), split)
        return datasets.load_dataset(str(path), split=split)  # a folder of parquet/arrow files
    try:
        return datasets.load_dataset(str(source), split=split)
    except Exception as e:  # offline, unknown repo, ...: say how to get a local copy
        raise RuntimeError(
            f"could not load SCAM from the hub as {source!r} ({type(e).__name__}: {e}). On a machine with network "
            f"run datasets.load_dataset({SCAM_HUB_NAME!r}, split='train').save_to_disk(PATH) and pass PATH"
        ) from e


def _rows_of_types(all_types: list[str], types: Sequence[str] | None) -> list[int]:
    """Indices of the rows whose type is one of `types` (every row when None), after checking the names."""
    if types is not None:
        bad = [t for t in types if t not in SCAM_TYPES]
        if bad:
            raise ValueError(f"unknown SCAM type(s) {bad}; use some of {list(SCAM_TYPES)}")
    rows = [i for i, t in enumerate(all_types) if types is None or t in types]
    if not rows:
        raise ValueError(
            f"no SCAM rows of type(s) {list(types or [])}; present types: {sorted(set(all_types))}"
        )
    return rows


def _class_labels(
    classnames: Sequence[str] | None, objects: list[str], words: list[str]
) -> tuple[list[str], list[int], list[int]]:
    """(class names, each row's object class, each row's attack-word class); the classes default to every
    object label and attack word, sorted."""
    if classnames is None:
        classnames = sorted(set(objects) | set(words))
    classnames = list(classnames)
    index = {c: i for i, c in enumerate(classnames)}
    unknown = sorted({x for x in objects + words if x not in index})
    if unknown:
        raise ValueError(
            f"SCAM labels/words {unknown[:5]} are not in classnames; add them or omit classnames"
        )
    return classnames, [index[o] for o in objects], [index[w] for w in words]


def _grouping(
    group_by: str, kinds: list[str], classnames: list[str], text_labels: list[int]
) -> tuple[list[str], list[int]]:
    """(group names, each row's group) for `group_by`: "attack", "type" or "text" (see `load_scam`)."""
    if group_by == "attack":
        return list(ATTACK_GROUPS), [int(k != CLEAN_TYPE) for k in kinds]
    if group_by == "type":
        group_names = list(SCAM_TYPES) + sorted(set(kinds) - set(SCAM_TYPES))
        return group_names, [group_names.index(k) for k in kinds]
    if group_by == "text":
        groups = [len(classnames) if k == CLEAN_TYPE else t for k, t in zip(kinds, text_labels, strict=True)]
        return [*classnames, NO_TEXT], groups
    raise ValueError(f"unknown group_by {group_by!r}; use 'attack', 'type' or 'text'")


def load_scam(
    source: Any = SCAM_HUB_NAME,
    *,
    split: str = "train",
    types: Sequence[str] | None = None,
    group_by: str = "attack",
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    transform: Callable[[Image.Image], Any] | None = None,
) -> LabelledImageDataset:
    """SCAM as a `LabelledImageDataset`; `source` is a `datasets.Dataset`/`DatasetDict`, a `save_to_disk` folder or a hub name.

    `types` keeps only those variants (default all). `group_by`: "attack" (clean = NoSCAM / attacked),
    "type" (one group per variant, in SCAM_TYPES order) or "text" (one group per attack word).
    `extras`: type, text (attack word), text_label (its class index), and id / postit_area_pct when present.
    """
    ds = _open_dataset(source, split)
    require_columns(
        ds.column_names,
        _REQUIRED,
        "SCAM dataset",
        f"load the {SCAM_HUB_NAME} dataset (columns image, object_label, attack_word, type)",
    )
    all_types = [str(t) for t in ds["type"]]
    if isinstance(types, str):
        types = [types]
    rows = _rows_of_types(all_types, types)
    all_objects, all_words = list(ds["object_label"]), list(ds["attack_word"])
    objects = [str(all_objects[i]).strip() for i in rows]
    words = [str(all_words[i]).strip() for i in rows]
    kinds = [all_types[i] for i in rows]
    classnames, labels, text_labels = _class_labels(classnames, objects, words)
    group_names, groups = _grouping(group_by, kinds, classnames, text_labels)
    extras: dict[str, list[Any]] = {"type": kinds, "text": words, "text_label": text_labels}
    for col in _OPTIONAL_EXTRAS:
        if col in ds.column_names:
            values = list(ds[col])
            extras[col] = [values[i] for i in rows]
    return LabelledImageDataset(
        rows,
        labels,
        groups,
        classnames,
        group_names,
        transform=transform,
        loader=_RowImageLoader(ds),
        templates=templates,
        extras=extras,
        name="scam" if types is None else "scam-" + "+".join(types),
        info={
            "format": "scam",
            "split": split,
            "types": list(types) if types else None,
            "group_by": group_by,
        },
    )
