"""Class-per-subfolder image sets (torchvision ImageFolder layout), e.g. an ImageNet subset to attack."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from sae_clip_plugin import registry

from ._io import list_images
from .labelled import DEFAULT_TEMPLATE, LabelledImageDataset


def load_image_folder(
    root: str | os.PathLike,
    classnames: Sequence[str] | None = None,
    transform: Callable[[Image.Image], Any] | None = None,
    name: str | None = None,
) -> LabelledImageDataset:
    """Read `root/<class folder>/<image>`; labels follow the sorted folder names, group = label.

    `classnames` gives readable names for the sorted folders (e.g. ImageNet synsets -> "goldfish");
    by default the folder names are used with underscores replaced by spaces.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} does not exist; pass the folder holding one subfolder per class"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root} has no class subfolders; expected the layout root/<class>/<image files>")
    if classnames is None:
        classnames = [f.name.replace("_", " ") for f in folders]
    elif len(classnames) != len(folders):
        raise ValueError(
            f"got {len(classnames)} classnames for {len(folders)} class folders in {root}; pass one name per sorted folder"
        )
    sources: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = list_images(folder)
        sources.extend(str(f) for f in files)
        labels.extend([label] * len(files))
    if not sources:
        raise ValueError(
            f"no image files found under {root}/<class>/; expected .jpg/.png files in the class folders"
        )
    return LabelledImageDataset(
        sources,
        labels,
        labels,
        classnames,
        list(classnames),
        transform=transform,
        templates=(DEFAULT_TEMPLATE,),
        name=name or root.name,
        info={"root": str(root), "format": "image_folder"},
    )


def load_labelled_images(
    spec: str | os.PathLike, max_images: int | None = None, seed: int = 4321
) -> tuple[Any, list[str], list[str]]:
    """(labelled images, class names, zero-shot templates) from a name: a world's registered evaluation set
    (e.g. "toy": `max_images` shape images, default 512) or a folder with one subfolder per class."""
    registered = registry.find("eval_images", str(spec))
    if registered is not None:
        return registered(max_images or 512, seed=seed)
    if not Path(spec).is_dir():
        raise FileNotFoundError(
            f"images {str(spec)!r}: not a folder and not a registered evaluation set "
            f"({', '.join(registry.names('eval_images')) or 'none installed'}); pass a folder with one subfolder "
            "per class"
        )
    dataset = load_image_folder(spec)
    return dataset, list(dataset.classnames), list(dataset.templates)
