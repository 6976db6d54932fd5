"""Datasets of the toy world: the CLIP training stream and the group-labelled evaluation sets.

Items are rendered lazily from metadata, so sets of any size cost nothing until read. Each item is
``(image, meta)`` where ``image`` is a PIL image (or ``transform(image)``) and ``meta`` a flat dict of
the sample's metadata plus its labels (``label``, ``group``, ``group_id``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .sampling import WorldConfig, place_shape, place_word, place_word_beside, shape_sample, train_sample
from .world import BACKGROUNDS, COLOURS, SHAPES, ToySample, render


class ToyDataset(torch.utils.data.Dataset):
    """Renders ``samples[i]`` on access; ``labels[i]`` (a dict) is merged into its metadata."""

    def __init__(
        self,
        samples: Sequence[ToySample],
        labels: Sequence[dict[str, Any]],
        transform: Callable[[Image.Image], Any] | None = None,
        classnames: Sequence[str] = SHAPES,
    ):
        if len(samples) != len(labels):
            raise ValueError(
                f"{len(samples)} samples but {len(labels)} label dicts; pass one dict per sample"
            )
        self.samples, self.labels, self.transform = list(samples), list(labels), transform
        self.classnames = list(classnames)

    def __len__(self) -> int:
        return len(self.samples)

    def meta(self, i: int) -> dict[str, Any]:
        return {**self.samples[i].to_dict(), **self.labels[i]}

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        img = render(self.samples[i])
        return (self.transform(img) if self.transform else img), self.meta(i)

    def items(self) -> list[tuple[Image.Image, dict[str, Any]]]:
        """All (PIL image, metadata) pairs, untransformed."""
        return [(render(s), self.meta(i)) for i, s in enumerate(self.samples)]


def train_dataset(
    n: int, seed: int = 0, cfg: WorldConfig | None = None, transform: Callable | None = None
) -> ToyDataset:
    """The first ``n`` samples of the CLIP training stream for ``seed``; ``meta['caption']`` is the caption."""
    pairs = [train_sample(seed, i, cfg) for i in range(n)]
    return ToyDataset([s for s, _ in pairs], [{"caption": c} for _, c in pairs], transform)


WORD_PLACEMENTS = ("beside", "anywhere")


def typographic_set(
    n: int,
    seed: int = 1,
    cfg: WorldConfig | None = None,
    transform: Callable | None = None,
    placement: str = "beside",
) -> ToyDataset:
    """``n`` clean shape images from the training distribution, each followed by its attacked twin.

    The twin is the same image with a wrong class name written on it. Items ``2k`` (``variant='clean'``)
    and ``2k+1`` (``variant='attacked'``) share ``pair_id=k``; ``label`` is the true shape's index in
    :data:`SHAPES`, ``word_label`` the written word's index (-1 when clean).

    ``placement='beside'`` (default) writes the word where it leaves the shape uncovered, like a label
    stuck next to an object in the real attacks (RTA-100, PAINT), so the drop measures reading and not
    occlusion; ``'anywhere'`` places it as in training, often over the shape.
    """
    if placement not in WORD_PLACEMENTS:
        raise ValueError(f"placement must be one of {WORD_PLACEMENTS}, got {placement!r}")
    cfg = cfg or WorldConfig()
    rng = np.random.default_rng((seed, 31))
    samples, labels = [], []
    for k in range(n):
        where = None
        while where is None:  # redraw the few shapes that leave no room for a label beside them
            clean = shape_sample(rng, cfg, shape=SHAPES[k % len(SHAPES)])
            wrong = str(rng.choice([w for w in SHAPES if w != clean.shape]))
            if placement == "anywhere":
                where = place_word(rng, wrong, cfg)
            else:
                where = place_word_beside(rng, wrong, clean, cfg)
        attacked = clean.with_word(**where)
        label = SHAPES.index(clean.shape)
        samples += [clean, attacked]
        labels += [
            {"pair_id": k, "variant": "clean", "label": label, "word_label": -1},
            {"pair_id": k, "variant": "attacked", "label": label, "word_label": SHAPES.index(wrong)},
        ]
    return ToyDataset(samples, labels, transform)


def _balanced_set(
    classes: Sequence[str],
    attribute: str,
    values: Sequence[str],
    majority: dict[str, str],
    n_per_group: int,
    seed: int,
    cfg: WorldConfig,
    transform: Callable | None,
) -> ToyDataset:
    rng = np.random.default_rng((seed, 57))
    samples, labels = [], []
    for ci, cls in enumerate(classes):
        for vi, value in enumerate(values):
            for _ in range(n_per_group):
                colour = value if attribute == "colour" else str(rng.choice(tuple(COLOURS)))
                background = value if attribute == "background" else str(rng.choice(BACKGROUNDS))
                samples.append(
                    ToySample(
                        background=background,
                        texture_seed=int(rng.integers(2**31)),
                        shape=cls,
                        colour=colour,
                        **place_shape(rng, cfg),
                    )
                )
                labels.append(
                    {
                        "label": ci,
                        "spurious_label": vi,
                        "group": f"{cls}/{value}",
                        "group_id": ci * len(values) + vi,
                        "majority": majority[cls] == value,
                    }
                )
    return ToyDataset(samples, labels, transform, classnames=classes)


def background_spurious_set(
    n_per_group: int = 100, seed: int = 2, cfg: WorldConfig | None = None, transform: Callable | None = None
) -> ToyDataset:
    """Waterbirds-like: the two background-correlated shapes, balanced over (shape, land|water) groups.

    ``label`` indexes ``dataset.classnames`` (the two shapes), ``spurious_label`` the background.
    """
    cfg = cfg or WorldConfig()
    classes = sorted(cfg.background_spurious)
    values = sorted(set(cfg.background_spurious.values()))
    return _balanced_set(
        classes, "background", values, cfg.background_spurious, n_per_group, seed, cfg, transform
    )


def colour_spurious_set(
    n_per_group: int = 100, seed: int = 3, cfg: WorldConfig | None = None, transform: Callable | None = None
) -> ToyDataset:
    """CelebA-like: the two colour-correlated shapes, balanced over (shape, colour) groups."""
    cfg = cfg or WorldConfig()
    classes = sorted(cfg.colour_spurious)
    values = sorted(set(cfg.colour_spurious.values()))
    return _balanced_set(classes, "colour", values, cfg.colour_spurious, n_per_group, seed, cfg, transform)
