"""Disentanglement tasks: a selection split and a disjoint evaluation split of group-labelled images.

A task holds model-ready pixels with class labels, group labels and a spurious label per image:
- typographic (`kind="typographic"`): groups clean / attacked; spurious = the written word's class
  index, -1 for no text (the reference) — or 1 / 0 for attacked / clean with `spurious_by="attack"`;
  twins share a pair id, and `text_patches` marks the patches the word covers (for the head baseline);
- spurious-attribute sets (`kind="groups"`, Waterbirds / CelebA / the toy background and colour
  sets): groups = (class, attribute) and spurious = the attribute value.

Features are chosen on `select` and everything is reported on `evaluate`; the two never share an
image (or, for typographic sets, a clean/attacked pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_clip_plugin import data, registry
from sae_clip_plugin.analysis.pixels import materialize_images
from sae_clip_plugin.data import (
    TypographicConfig,
    load_image_folder,
    load_typographic_folder,
    make_typographic_dataset,
)

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

KINDS = ("typographic", "groups")
SPURIOUS_BY = ("word", "attack")


@dataclass
class ImageSplit:
    """Model-ready pixels [N, 3, S, S] with labels, groups and spurious labels (all [N] int64)."""

    pixels: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    spurious: torch.Tensor
    pair_ids: torch.Tensor | None = None  # typographic twins share an id
    text_patches: torch.Tensor | None = None  # [N, n_patches] bool, the written word's patches

    def __post_init__(self) -> None:
        n = int(self.pixels.shape[0])
        for name in ("labels", "groups", "spurious", "pair_ids", "text_patches"):
            value = getattr(self, name)
            if value is not None and int(value.shape[0]) != n:
                raise ValueError(f"{name} has {int(value.shape[0])} rows but there are {n} images")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def subset(self, index: Sequence[int] | torch.Tensor) -> ImageSplit:
        idx = torch.as_tensor(index, dtype=torch.long)
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return ImageSplit(
            self.pixels[idx], self.labels[idx], self.groups[idx], self.spurious[idx],
            pick(self.pair_ids), pick(self.text_patches),
        )  # fmt: skip

    def twins(self, attacked_group: int = 1) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(attacked indices, clean twin indices) of pairs present on both sides, else None."""
        if self.pair_ids is None:
            return None
        clean = {
            int(p): i
            for i, (p, g) in enumerate(zip(self.pair_ids, self.groups, strict=True))
            if g != attacked_group
        }
        pairs = [(i, clean[int(p)]) for i, (p, g) in enumerate(zip(self.pair_ids, self.groups, strict=True))
                 if g == attacked_group and int(p) in clean]  # fmt: skip
        if not pairs:
            return None
        att, cln = zip(*pairs, strict=True)
        return torch.tensor(att), torch.tensor(cln)


@dataclass
class SpuriousTask:
    """What `run_disentangle` needs: class names and prompts, two disjoint splits, how to read groups."""

    name: str
    kind: str
    classnames: list[str]
    templates: list[str]
    group_names: list[str]
    select: ImageSplit
    evaluate: ImageSplit
    reference: int | None = None  # spurious value compared against (typographic: -1 = no text)
    spurious_prompts: list[str] = field(default_factory=list)  # for steering-based selection
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "typographic" and list(self.group_names[:2]) != ["clean", "attacked"]:
            raise ValueError(
                f"a typographic task needs groups ['clean', 'attacked'] (0 and 1), got {self.group_names}; "
                "load the set with group_by='attack'"
            )


# ------------------------------------------------------------------------------------------------
# splitting


def disjoint_split(
    groups: torch.Tensor, fraction: float = 0.5, seed: int = 0, pair_ids: torch.Tensor | None = None
) -> tuple[list[int], list[int]]:
    """(selection indices, evaluation indices), stratified by group; twins (same pair id) stay together."""
    if not 0 < fraction < 1:
        raise ValueError(f"the selection fraction must be in (0, 1), got {fraction}")
    n = int(groups.shape[0])
    units = (
        [[i] for i in range(n)]
        if pair_ids is None
        else [list(v) for v in _group_by(pair_ids.tolist()).values()]
    )
    rng = np.random.default_rng(seed)
    strata: dict[tuple[int, ...], list[list[int]]] = {}
    for unit in units:
        strata.setdefault(tuple(sorted({int(groups[i]) for i in unit})), []).append(unit)
    select, evaluate = [], []
    for key in sorted(strata):
        members = strata[key]
        order = rng.permutation(len(members))
        cut = round(fraction * len(members))
        for rank, j in enumerate(order):
            (select if rank < cut else evaluate).extend(members[j])
    return sorted(select), sorted(evaluate)


def _group_by(values: Sequence[Any]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        out.setdefault(v, []).append(i)
    return out


# ------------------------------------------------------------------------------------------------
# LabelledImageDataset (CelebA, Waterbirds, typographic folders and generated sets)


def _spurious_from_dataset(dataset: Any, kind: str, spurious_by: str) -> tuple[torch.Tensor, int | None]:
    groups = dataset.groups.clone()
    if kind == "typographic":
        if spurious_by == "attack" or "text_label" not in dataset.extras:
            return groups, 0
        text = torch.as_tensor(dataset.extras["text_label"], dtype=torch.long)
        return torch.where(groups == 1, text, torch.full_like(text, -1)), -1
    for key in ("spurious", "place", "spurious_label"):
        if key in dataset.extras:
            return torch.as_tensor(dataset.extras[key], dtype=torch.long), None
    if (
        dataset.n_groups == 2 * dataset.n_classes
    ):  # group = 2 * class + attribute (CelebA / Waterbirds layout)
        return groups % 2, None
    raise ValueError(
        f"{dataset.name}: cannot tell the spurious attribute of each image; give the dataset an extras column "
        "'spurious' (0/1) or groups laid out as 2 * class + attribute"
    )


def _pair_ids(dataset: Any) -> torch.Tensor | None:
    raw = dataset.extras.get("pair_id")
    if raw is None:
        return None
    ids: dict[Any, int] = {}
    out = []
    for i, value in enumerate(raw):
        key = ("unpaired", i) if value is None or value == "" else value
        out.append(ids.setdefault(key, len(ids)))
    return torch.tensor(out, dtype=torch.long)


def _twin_text_patches(split: ImageSplit, patch_size: int, threshold: float) -> torch.Tensor | None:
    # lazy: transformer_lens (baselines); the built-in tasks need no model hooks
    from sae_clip_plugin.analysis.disentangle.baselines import patch_mask_from_twins

    twins = split.twins()
    if twins is None:
        return None
    att, cln = twins
    n_patches = (split.pixels.shape[-1] // patch_size) ** 2
    masks = torch.zeros(len(split), n_patches, dtype=torch.bool)
    masks[att] = patch_mask_from_twins(split.pixels[att], split.pixels[cln], patch_size, threshold)
    return masks


def task_from_datasets(
    model: HookedViT,
    select: Any,
    evaluate: Any,
    *,
    kind: str,
    name: str | None = None,
    spurious_by: str = "word",
    twin_threshold: float = 0.05,
    spurious_prompts: Sequence[str] = (),
    batch_size: int = 64,
) -> SpuriousTask:
    """A task from two LabelledImageDatasets (e.g. CelebA train / val), images preprocessed by the model."""
    if spurious_by not in SPURIOUS_BY:
        raise ValueError(f"spurious_by must be one of {SPURIOUS_BY}, got {spurious_by!r}")
    if list(select.classnames) != list(evaluate.classnames):
        raise ValueError("the selection and evaluation sets must have the same class names")
    splits, reference = [], None
    for ds in (select, evaluate):
        pixels, labels, groups = materialize_images(ds, model.preprocess, batch_size=batch_size)
        spurious, reference = _spurious_from_dataset(ds, kind, spurious_by)
        split = ImageSplit(pixels, labels, groups, spurious, _pair_ids(ds))
        if kind == "typographic":
            split.text_patches = _twin_text_patches(split, model.cfg.patch_size, twin_threshold)
        splits.append(split)
    return SpuriousTask(
        name=name or evaluate.name, kind=kind, classnames=list(evaluate.classnames),
        templates=list(evaluate.templates), group_names=list(evaluate.group_names), select=splits[0],
        evaluate=splits[1], reference=reference, spurious_prompts=list(spurious_prompts),
        info={"select": repr(select), "evaluate": repr(evaluate)},
    )  # fmt: skip


def task_from_dataset(
    model: HookedViT, dataset: Any, *, kind: str, fraction: float = 0.5, seed: int = 0, **kwargs: Any
) -> SpuriousTask:
    """Split one LabelledImageDataset into disjoint selection / evaluation halves (stratified, twin-aware)."""
    sel, ev = disjoint_split(dataset.groups, fraction, seed, _pair_ids(dataset))
    return task_from_datasets(
        model, dataset.subset(sel, name=f"{dataset.name}[select]"), dataset.subset(ev, name=dataset.name),
        kind=kind, **kwargs,
    )  # fmt: skip


BUILT_IN_TASKS = ("celeba", "waterbirds", "typo-folder", "typo-generate")


def build_task(
    model: HookedViT,
    spec: str,
    *,
    n_select: int | None = None,
    n_eval: int | None = None,
    seed: int = 0,
    spurious_by: str = "word",
    batch_size: int = 128,
    **options: Any,
) -> SpuriousTask:
    """A SpuriousTask from a name: a task a world registered (e.g. "toy-typographic"; `options` such as
    `placement` go to it), or NAME=PATH for the built-in data sets: celeba=ROOT (select on train, evaluate on
    val, both group-balanced), waterbirds=ROOT (select on val, evaluate on test), typo-folder=DIR (RTA-100 /
    PAINT naming, split in halves), typo-generate=IMAGE_FOLDER (wrong class names written on a
    class-per-subfolder image set, clean twins kept, split in halves)."""
    name, _, root = spec.partition("=")
    registered = registry.find("task", name) if not root else None
    if registered is not None:
        return registered(model, n_select=n_select or 300, n_eval=n_eval or 300, seed=seed,
                          spurious_by=spurious_by, **options)  # fmt: skip
    known = f"{registry.names('task')} or NAME=PATH with NAME in {BUILT_IN_TASKS}"
    if not root or name not in BUILT_IN_TASKS:
        raise ValueError(f"unknown task {spec!r}; use one of {known}")
    common = {"spurious_by": spurious_by, "batch_size": batch_size}
    if name in ("celeba", "waterbirds"):
        load = data.load_celeba if name == "celeba" else data.load_waterbirds
        splits = ("train", "val") if name == "celeba" else ("val", "test")
        sel = load(root, splits[0], balanced=True, n_per_group=n_select, seed=seed)
        ev = load(root, splits[1], balanced=True, n_per_group=n_eval, seed=seed)
        return task_from_datasets(model, sel, ev, kind="groups", name=name, **common)
    if name == "typo-folder":
        ds = load_typographic_folder(root)
    else:
        config = TypographicConfig(size=model.cfg.image_size, seed=seed)
        ds = make_typographic_dataset(load_image_folder(root), config)
    return task_from_dataset(model, ds, kind="typographic", seed=seed, name=name, **common)
