"""Images in, model-ready pixels out: the one place that reads an image spec or source into pixel tensors.

`open_images(spec)` turns a spec into a source (a folder, a datasets folder, `hf:<name>`, or a registered name such as
`toy`; `labelled=True` for class labels and zero-shot prompts); `iter_image_batches` reads any source in batches,
`materialize_images` reads it once into tensors, `as_pixels` makes one pixel tensor of a small set.

Sources accepted everywhere:
- a pixel tensor [N, 3, S, S], or a tuple (pixels, labels) / (pixels, labels, groups) of tensors;
- a torch Dataset whose items are a pixel tensor / PIL image, or a tuple (image, label[, group]), or
  (image, dict) with keys `label` and optionally `group_id` / `group` (the toy world's datasets);
- a DataLoader or any re-iterable of batches: a pixel tensor or a tuple (pixels, labels[, groups]);
- for `as_pixels`, also a list of PIL images or an ImageSource.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sae_clip_plugin.data import load_labelled_images
from sae_clip_plugin.training.sources import image_source

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def open_images(
    spec: str, labelled: bool = False, max_images: int | None = None, seed: int = 0, split: str = "validation"
) -> Any:
    """The image source a spec names: an ImageSource, or with `labelled` (images, class names, templates)."""
    if labelled:
        return load_labelled_images(spec, max_images, seed=seed)
    return image_source(spec, split=split, max_images=max_images, seed=seed)


def is_flat_folder(spec: str) -> bool:
    """A folder of images without class subfolders (it gives images but no labels)."""
    root = Path(spec)
    return root.is_dir() and not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())


def open_eval_images(spec: str, max_images: int | None = None, seed: int = 0) -> tuple[Any, Any, Any]:
    """(images, class names, templates) to evaluate on: labelled for a class-per-subfolder folder or a registered
    evaluation set; (images, None, None) for a flat folder, whose evaluation has no zero-shot part."""
    if is_flat_folder(spec):
        return image_source(spec, max_images=max_images, seed=seed), None, None
    return load_labelled_images(spec, max_images, seed=seed)


@dataclass
class ImageBatch:
    """A batch of model-ready pixels with optional class labels and group ids (both [batch] int64)."""

    pixels: torch.Tensor
    labels: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


# ------------------------------------------------------------------------------------------------
# image sources


def _as_label(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return int(value.reshape(-1)[0])
    return int(value)


def _split_item(item: Any) -> tuple[Any, int | None, Any]:
    """A dataset item -> (image, label, group); group may be an int, a string or None."""
    if isinstance(item, (torch.Tensor, Image.Image)):
        return item, None, None
    if isinstance(item, (tuple, list)) and item:
        image, rest = item[0], list(item[1:])
        if rest and isinstance(rest[0], dict):
            meta = rest[0]
            group = meta.get("group_id", meta.get("group"))
            return image, _as_label(meta.get("label")), group
        label = _as_label(rest[0]) if rest else None
        group = rest[1] if len(rest) > 1 else None
        return image, label, group
    raise TypeError(
        f"cannot read a dataset item of type {type(item).__name__}; items must be a pixel tensor, a PIL image, "
        "or a tuple (image, label[, group]) / (image, {'label': ..., 'group_id': ...})"
    )


class _GroupIds:
    """Maps group values (ints or names) to stable int ids in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}

    def __call__(self, group: Any) -> int:
        if isinstance(group, torch.Tensor):
            group = group.item()
        if isinstance(group, int):
            return group
        return self.ids.setdefault(group, len(self.ids))


def _collate(items: list[Any], transform: Callable | None, group_ids: _GroupIds) -> ImageBatch:
    images, labels, groups = [], [], []
    for item in items:
        image, label, group = _split_item(item)
        if not isinstance(image, torch.Tensor):
            if transform is None:
                raise TypeError(
                    f"dataset items are {type(image).__name__}, not pixel tensors; pass transform=model.preprocess "
                    "(or give the dataset a transform)"
                )
            image = transform(image)
        images.append(image)
        labels.append(label)
        groups.append(group)
    pixels = torch.stack(images)
    label_t = None if any(v is None for v in labels) else torch.tensor(labels, dtype=torch.long)
    group_t = (
        None
        if any(g is None for g in groups)
        else torch.tensor([group_ids(g) for g in groups], dtype=torch.long)
    )
    return ImageBatch(pixels, label_t, group_t)


def _from_batch(batch: Any) -> ImageBatch:
    if isinstance(batch, ImageBatch):
        return batch
    if isinstance(batch, torch.Tensor):
        return ImageBatch(batch)
    if isinstance(batch, dict):
        pixels = batch.get("pixel_values", batch.get("pixels", batch.get("image")))
        return ImageBatch(pixels, batch.get("label"), batch.get("group"))
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        groups = batch[2] if len(batch) > 2 and isinstance(batch[2], torch.Tensor) else None
        return ImageBatch(batch[0], labels, groups)
    raise TypeError(
        f"cannot read a batch of type {type(batch).__name__}; batches must be a pixel tensor or a tuple "
        "(pixels, labels[, groups]) of tensors"
    )


def iter_image_batches(
    images: Any,
    batch_size: int = 64,
    transform: Callable | None = None,
    max_images: int | None = None,
    num_workers: int = 0,
) -> Iterator[ImageBatch]:
    """Yield `ImageBatch`es from any supported image source (see the module docstring).

    `transform` turns PIL images into pixel tensors (usually `model.preprocess`). `max_images`
    stops after that many images (the last batch is cut). Dataset sources are read in order.
    """
    if isinstance(images, torch.Tensor):
        images = (images,)
    if (
        isinstance(images, tuple)
        and images
        and all(isinstance(t, torch.Tensor) for t in images)
        and images[0].ndim == 4
    ):
        pixels, *rest = images
        n = int(pixels.shape[0])
        if any(int(t.shape[0]) != n for t in rest):
            raise ValueError("pixels, labels and groups must have the same length")
        batches: Iterable[Any] = (
            tuple(t[i : i + batch_size] for t in images) for i in range(0, n, batch_size)
        )
    elif isinstance(images, Dataset) and not isinstance(images, DataLoader) and hasattr(images, "__len__"):
        group_ids = _GroupIds()
        batches = DataLoader(
            images,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=lambda items: _collate(items, transform, group_ids),
        )
    elif isinstance(images, Iterable):
        batches = images
    else:
        raise TypeError(
            f"unsupported image source {type(images).__name__}: pass a pixel tensor, a torch Dataset or a "
            "DataLoader / iterable of batches"
        )
    seen = 0
    for raw in batches:
        batch = _from_batch(raw)
        if max_images is not None and seen + len(batch) > max_images:
            keep = max_images - seen
            batch = ImageBatch(
                batch.pixels[:keep],
                None if batch.labels is None else batch.labels[:keep],
                None if batch.groups is None else batch.groups[:keep],
            )
        if len(batch) == 0:
            break
        seen += len(batch)
        yield batch
        if max_images is not None and seen >= max_images:
            break


def materialize_images(
    images: Any,
    transform: Callable | None = None,
    max_images: int | None = None,
    batch_size: int = 64,
) -> tuple[torch.Tensor, ...]:
    """Read an image source once into tensors: (pixels,) or (pixels, labels) or (pixels, labels, groups).

    Worth it when the same images are read many times (several SAEs, the mean pass) and decoding or
    rendering them costs more than holding them in memory.
    """
    batches = list(iter_image_batches(images, batch_size, transform=transform, max_images=max_images))
    if not batches:
        raise ValueError("the image source yielded no images")
    out = [torch.cat([b.pixels for b in batches])]
    if all(b.labels is not None for b in batches):
        out.append(torch.cat([b.labels for b in batches]))
        if all(b.groups is not None for b in batches):
            out.append(torch.cat([b.groups for b in batches]))
    return tuple(out)


def as_pixels(model: HookedViT, images: Any) -> torch.Tensor:
    """A [N, 3, S, S] tensor, a list of PIL images / tensors, or an ImageSource -> one checked pixel tensor."""
    if isinstance(images, torch.Tensor):
        model.check_pixel_values(images)
        return images
    items = [images[i] for i in range(len(images))] if hasattr(images, "__getitem__") else list(images)
    if not items:
        raise ValueError("no images: pass at least one")
    tensors = [item if isinstance(item, torch.Tensor) else model.preprocess(item) for item in items]
    pixels = torch.stack(tensors)
    model.check_pixel_values(pixels)
    return pixels
