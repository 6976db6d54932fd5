"""Zero-shot classification helpers: image batches in, logits with CLIP's logit scale, top-1, CE, group accuracy.

Shared by the SAE metrics and the disentanglement work. Logits are always `logit_scale * cos(image,
class)`: without the scale CE is ill-conditioned (the paper's sparsity findings; arXiv 2504.08729). Everything that is summed over a
data set is accumulated in float64.

Image sources accepted everywhere (`iter_image_batches`):
- a pixel tensor [N, 3, S, S], or a tuple (pixels, labels) / (pixels, labels, groups) of tensors;
- a torch Dataset whose items are a pixel tensor / PIL image, or a tuple (image, label[, group]), or
  (image, dict) with keys `label` and optionally `group_id` / `group` (the toy world's datasets);
- a DataLoader or any re-iterable of batches: a pixel tensor or a tuple (pixels, labels[, groups]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sae_clip_plugin.model.device import model_device
from sae_clip_plugin.model.text import zero_shot_logits

Forward = Callable[[torch.Tensor], torch.Tensor]  # pixels -> image embedding


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


def dataset_classnames(images: Any) -> list[str] | None:
    """The class names a data set carries (`classnames` attribute), if any."""
    names = getattr(images, "classnames", None)
    if names is None and isinstance(images, DataLoader):
        names = getattr(images.dataset, "classnames", None)
    return list(names) if names is not None else None


# ------------------------------------------------------------------------------------------------
# logits and per-batch metrics


def class_weights(
    model: Any, classnames: Sequence[str], templates: Sequence[str] | None = None
) -> torch.Tensor:
    """[d_embed, n_classes] zero-shot classifier from the model's text tower (open_clip's recipe)."""
    if not classnames:
        raise ValueError("zero-shot evaluation needs class names (classnames=[...])")
    return model.zero_shot_weights(list(classnames), list(templates) if templates is not None else None)


def kl_divergence(logits_ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p_ref || p) between class distributions, in float64 ([batch])."""
    log_p = F.log_softmax(logits_ref.double(), dim=-1)
    log_q = F.log_softmax(logits.double(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def group_accuracy(correct: torch.Tensor, groups: torch.Tensor) -> dict[int, float]:
    """Accuracy per group id (groups [N] int), from a [N] bool tensor of correct predictions."""
    correct, groups = correct.reshape(-1).cpu(), groups.reshape(-1).cpu()
    return {int(g): float(correct[groups == g].double().mean()) for g in torch.unique(groups)}


class ZeroShotAccumulator:
    """Streaming top-1, CE and per-group accuracy over batches of logits (sums in float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0.0
        self.ce_sum = 0.0
        self.group_correct: dict[int, float] = {}
        self.group_count: dict[int, int] = {}

    def add(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        labels = labels.to(logits.device)
        n_classes = logits.shape[-1]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(
                f"labels must lie in [0, {n_classes}) for {n_classes} classes, got {labels.min()}..{labels.max()}; "
                "check that the class names match the data set's labels"
            )
        hit = logits.argmax(-1) == labels
        self.n += int(labels.numel())
        self.correct += float(hit.double().sum())
        self.ce_sum += float(F.cross_entropy(logits.double(), labels, reduction="sum"))
        if groups is not None:
            for g, h in zip(groups.reshape(-1).tolist(), hit.reshape(-1).tolist(), strict=True):
                self.group_correct[g] = self.group_correct.get(g, 0.0) + float(h)
                self.group_count[g] = self.group_count.get(g, 0) + 1

    def result(self, prefix: str = "") -> dict[str, float]:
        """{top1, ce} and, with groups, {worst_group_acc, mean_group_acc, group_acc_<g>...}."""
        nan = float("nan")
        out = {
            f"{prefix}top1": self.correct / self.n if self.n else nan,
            f"{prefix}ce": self.ce_sum / self.n if self.n else nan,
        }
        if self.group_count:
            accs = {g: self.group_correct[g] / self.group_count[g] for g in sorted(self.group_count)}
            out[f"{prefix}worst_group_acc"] = min(accs.values())
            out[f"{prefix}mean_group_acc"] = sum(accs.values()) / len(accs)
            out.update({f"{prefix}group_acc_{g}": a for g, a in accs.items()})
        return out


def zero_shot_metrics(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None
) -> dict[str, float]:
    """top1, ce (and group accuracies) of a whole set of logits at once."""
    acc = ZeroShotAccumulator()
    acc.add(logits, labels, groups)
    return acc.result()


# ------------------------------------------------------------------------------------------------
# whole-data-set helpers


@dataclass
class EmbeddedImages:
    """Image embeddings of a whole data set with their labels and groups (None where absent)."""

    embeds: torch.Tensor
    labels: torch.Tensor | None
    groups: torch.Tensor | None


@torch.no_grad()
def embed_images(
    model: Any,
    images: Any,
    forward: Forward | None = None,
    batch_size: int = 64,
    max_images: int | None = None,
    progress: bool = False,
) -> EmbeddedImages:
    """Image embeddings (float32, on CPU) of every image; `forward` replaces `model(pixels)` (e.g. an intervention)."""
    from tqdm.auto import tqdm

    device = model_device(model)
    forward = forward or model
    embeds, labels, groups = [], [], []
    batches = iter_image_batches(
        images, batch_size, transform=getattr(model, "preprocess", None), max_images=max_images
    )
    for batch in tqdm(batches, desc="embedding images", disable=not progress):
        embeds.append(forward(batch.pixels.to(device)).float().cpu())
        labels.append(batch.labels)
        groups.append(batch.groups)
    if not embeds:
        raise ValueError("the image source yielded no images")
    cat = lambda ts: None if any(t is None for t in ts) else torch.cat(ts)  # noqa: E731
    return EmbeddedImages(torch.cat(embeds), cat(labels), cat(groups))


@torch.no_grad()
def evaluate_zero_shot(
    model: Any,
    images: Any,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    weights: torch.Tensor | None = None,
    forward: Forward | None = None,
    batch_size: int = 64,
    max_images: int | None = None,
) -> dict[str, float]:
    """Zero-shot top-1, CE (logit scale applied) and group accuracies of `model` (or `forward`) on labelled images."""
    if weights is None:
        classnames = classnames or dataset_classnames(images)
        weights = class_weights(model, classnames or [], templates)
    emb = embed_images(model, images, forward=forward, batch_size=batch_size, max_images=max_images)
    if emb.labels is None:
        raise ValueError("zero-shot accuracy needs class labels; the image source gave none")
    logits = zero_shot_logits(emb.embeds, weights.cpu().float(), float(model.logit_scale))
    out = zero_shot_metrics(logits, emb.labels, emb.groups)
    out["n_images"] = float(len(emb.labels))
    return out
