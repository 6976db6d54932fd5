"""Zero-shot classification helpers: image batches in, logits with CLIP's logit scale, top-1, CE, group accuracy.

Shared by the SAE metrics and the disentanglement work. Logits are always `logit_scale * cos(image,
class)`: without the scale CE is ill-conditioned (the paper's sparsity findings; arXiv 2504.08729). Everything that is summed over a
data set is accumulated in float64.

Images come in any form analysis/pixels.py reads (`iter_image_batches`, re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sae_clip_plugin.analysis.pixels import ImageBatch as ImageBatch  # re-exported: earlier home
from sae_clip_plugin.analysis.pixels import iter_image_batches
from sae_clip_plugin.analysis.pixels import (
    materialize_images as materialize_images,  # re-exported: earlier home
)
from sae_clip_plugin.model.device import model_device
from sae_clip_plugin.model.text import zero_shot_logits

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

Forward = Callable[[torch.Tensor], torch.Tensor]  # pixels -> image embedding


def dataset_classnames(images: Any) -> list[str] | None:
    """The class names a data set carries (`classnames` attribute), if any."""
    names = getattr(images, "classnames", None)
    if names is None and isinstance(images, DataLoader):
        names = getattr(images.dataset, "classnames", None)
    return list(names) if names is not None else None


# ------------------------------------------------------------------------------------------------
# logits and per-batch metrics


def class_weights(
    model: HookedViT, classnames: Sequence[str], templates: Sequence[str] | None = None
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
    model: HookedViT,
    images: Any,
    forward: Forward | None = None,
    batch_size: int = 64,
    max_images: int | None = None,
    progress: bool = False,
) -> EmbeddedImages:
    """Image embeddings (float32, on CPU) of every image; `forward` replaces `model(pixels)` (e.g. an intervention)."""
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
    model: HookedViT,
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
