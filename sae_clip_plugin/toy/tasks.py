"""The toy world's disentanglement tasks (`sae-clip disentangle --task toy-typographic|toy-background|toy-colour`).

Registered with `sae_clip_plugin.registry` as "task" factories (toy/registration.py); splits are drawn from
different seeds, so selection and evaluation images are disjoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from sae_clip_plugin.analysis.disentangle.baselines import patch_mask_from_boxes
from sae_clip_plugin.analysis.disentangle.tasks import SPURIOUS_BY, ImageSplit, SpuriousTask
from sae_clip_plugin.toy.datasets import background_spurious_set, colour_spurious_set, typographic_set
from sae_clip_plugin.toy.registration import TASKS
from sae_clip_plugin.toy.vocabulary import toy_templates
from sae_clip_plugin.toy.world import IMAGE_SIZE, render, word_box

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def _toy_pixels(model: HookedViT, dataset: Any) -> torch.Tensor:
    return torch.stack([model.preprocess(render(s)) for s in dataset.samples])


def _toy_word_boxes(dataset: Any, model_size: int) -> list[tuple[float, float, float, float] | None]:
    scale = model_size / IMAGE_SIZE
    boxes: list[tuple[float, float, float, float] | None] = []
    for s in dataset.samples:
        if s.word is None:
            boxes.append(None)
            continue
        w, h = word_box(s.word, s.word_size)
        boxes.append((s.word_x * scale, s.word_y * scale, (s.word_x + w) * scale, (s.word_y + h) * scale))
    return boxes


def _toy_split(model: HookedViT, dataset: Any, kind: str, spurious_by: str) -> ImageSplit:
    pixels = _toy_pixels(model, dataset)
    meta = dataset.labels
    labels = torch.tensor([m["label"] for m in meta])
    if kind == "typographic":
        groups = torch.tensor([int(m["variant"] == "attacked") for m in meta])
        words = torch.tensor([m["word_label"] for m in meta])
        spurious = groups.clone() if spurious_by == "attack" else words
        boxes = _toy_word_boxes(dataset, model.cfg.image_size)
        text = patch_mask_from_boxes(boxes, model.cfg.image_size, model.cfg.patch_size)
        return ImageSplit(pixels, labels, groups, spurious, torch.tensor([m["pair_id"] for m in meta]), text)
    groups = torch.tensor([m["group_id"] for m in meta])
    return ImageSplit(pixels, labels, groups, torch.tensor([m["spurious_label"] for m in meta]))


def toy_task(
    model: HookedViT,
    task: str,
    *,
    n_select: int = 300,
    n_eval: int = 300,
    seed: int = 0,
    spurious_by: str = "word",
    placement: str = "beside",
) -> SpuriousTask:
    """A toy-world task with disjoint splits drawn from different seeds.

    `n_select` / `n_eval`: clean/attacked pairs (typographic) or images per group (spurious sets).
    `placement`: where the typographic attack writes its word (see `toy.typographic_set`).
    Seeds are chosen away from the toy CLIP's own evaluation seeds (1234..1236).
    """
    if task not in TASKS:
        raise ValueError(f"unknown toy task {task!r}; choose one of {TASKS}")
    if spurious_by not in SPURIOUS_BY:
        raise ValueError(f"spurious_by must be one of {SPURIOUS_BY}, got {spurious_by!r}")
    base = 5000 + 10 * seed
    if task == "toy-typographic":
        sets = [
            typographic_set(n, seed=base + i, placement=placement) for i, n in enumerate((n_select, n_eval))
        ]
        kind, group_names = "typographic", ["clean", "attacked"]
        reference = 0 if spurious_by == "attack" else -1
        prompts = [f"the word {c}." for c in sets[0].classnames]
    else:
        make = background_spurious_set if task == "toy-background" else colour_spurious_set
        sets = [make(n, seed=base + i) for i, n in enumerate((n_select, n_eval))]
        kind, reference = "groups", None
        names: dict[int, str] = {m["group_id"]: m["group"] for m in sets[1].labels}
        group_names = [names[g] for g in sorted(names)]
        values = sorted({m["group"].split("/")[1] for m in sets[1].labels})
        prompts = [f"a photo of {v}." if task == "toy-background" else f"something {v}." for v in values]
    splits = [_toy_split(model, ds, kind, spurious_by) for ds in sets]
    return SpuriousTask(
        name=task, kind=kind, classnames=list(sets[1].classnames), templates=toy_templates(),
        group_names=group_names, select=splits[0], evaluate=splits[1], reference=reference,
        spurious_prompts=prompts, info={"seeds": [base, base + 1], "n_select": n_select, "n_eval": n_eval},
    )  # fmt: skip
