"""The one dataset type every loader returns: lazily loaded images with a class label and a group label.

Group labels are what the disentanglement evaluation needs (worst-group accuracy on CelebA/Waterbirds,
attacked vs clean accuracy on typographic sets), so they live beside the class labels instead of in
per-dataset side tables.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ._io import open_rgb, to_rgb

DEFAULT_TEMPLATE = "a photo of a {}."

ImageLoader = Callable[[Any], Image.Image]


class LabelledImageDataset(Dataset):
    """Images with class and group labels; item i is `(image, label, group)`.

    `sources[i]` is whatever `loader` turns into a PIL image: by default a file path (opened with PIL and
    converted to RGB) or a PIL image; loaders for hub datasets or rendered images pass their own callable.
    Images are only opened in `__getitem__` / `load_image`, so building a dataset of 200k files is cheap.
    `transform` (for example a CLIP preprocess) is applied to the RGB image in `__getitem__`.
    `extras` holds optional per-sample columns (file name, written word, ...) that follow subsetting.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        labels: Sequence[int],
        groups: Sequence[int],
        classnames: Sequence[str],
        group_names: Sequence[str],
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        loader: ImageLoader | None = None,
        templates: Sequence[str] = (DEFAULT_TEMPLATE,),
        extras: Mapping[str, Sequence[Any]] | None = None,
        name: str = "dataset",
        info: Mapping[str, Any] | None = None,
    ) -> None:
        n = len(sources)
        if len(labels) != n or len(groups) != n:
            raise ValueError(
                f"{name}: sources, labels and groups must have the same length (got {n}, {len(labels)}, {len(groups)})"
            )
        self.sources = list(sources)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(n))
        self.groups = torch.as_tensor(np.asarray(groups, dtype=np.int64).reshape(n))
        self.classnames = list(classnames)
        self.group_names = list(group_names)
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classnames)):
            raise ValueError(f"{name}: labels must lie in [0, {len(self.classnames)}) to index classnames")
        if n and (int(self.groups.min()) < 0 or int(self.groups.max()) >= len(self.group_names)):
            raise ValueError(f"{name}: groups must lie in [0, {len(self.group_names)}) to index group_names")
        self.extras = {k: list(v) for k, v in (extras or {}).items()}
        for key, col in self.extras.items():
            if len(col) != n:
                raise ValueError(f"{name}: extras column {key!r} has {len(col)} rows, expected {n}")
        self.transform = transform
        self.loader = loader
        self.templates = list(templates)
        self.name = name
        self.info = dict(info or {})

    # -- torch Dataset -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sources)

    def load_image(self, index: int) -> Image.Image:
        """The untransformed RGB image of sample `index`."""
        src = self.sources[index]
        if self.loader is not None:
            image = self.loader(src)
        elif isinstance(src, Image.Image):
            image = src
        else:
            image = open_rgb(src)
        return to_rgb(image, name=f"{self.name} sample {index}")

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index]), int(self.groups[index])

    # -- labels and groups ---------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def group_counts(self) -> dict[str, int]:
        """Number of samples per group name, in group-index order (groups with no sample count 0)."""
        counts = torch.bincount(self.groups, minlength=self.n_groups).tolist()
        return dict(zip(self.group_names, counts, strict=True))

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=self.n_classes).tolist()
        return dict(zip(self.classnames, counts, strict=True))

    def class_prompts(self, template: str | None = None) -> list[str]:
        """One zero-shot prompt per class, `template` (default the dataset's first template) filled in."""
        template = template or self.templates[0]
        return [template.format(c) for c in self.classnames]

    def sample_info(self, index: int) -> dict[str, Any]:
        """Everything known about one sample, without loading its image."""
        label, group = int(self.labels[index]), int(self.groups[index])
        info = {
            "source": self.sources[index],
            "label": label,
            "classname": self.classnames[label],
            "group": group,
            "group_name": self.group_names[group],
        }
        info.update({k: v[index] for k, v in self.extras.items()})
        return info

    # -- derived datasets ----------------------------------------------------------------------------
    def subset(
        self, indices: Sequence[int] | torch.Tensor | np.ndarray, name: str | None = None
    ) -> LabelledImageDataset:
        """A new dataset of the given samples (same classes, groups, loader and transform)."""
        idx = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        out = copy.copy(self)
        out.sources = [self.sources[i] for i in idx]
        out.labels = self.labels[idx] if idx else self.labels[:0]
        out.groups = self.groups[idx] if idx else self.groups[:0]
        out.extras = {k: [v[i] for i in idx] for k, v in self.extras.items()}
        out.info = dict(self.info)
        out.name = name or self.name
        return out

    def with_transform(self, transform: Callable[[Image.Image], Any] | None) -> LabelledImageDataset:
        """A shallow copy with another transform (for example a model's preprocess)."""
        out = copy.copy(self)
        out.transform = transform
        return out

    def balanced_subset(
        self,
        n_per_group: int | None = None,
        seed: int = 0,
        groups: Sequence[int] | None = None,
    ) -> LabelledImageDataset:
        """Draw the same number of samples from every group, without replacement.

        `n_per_group=None` balances to the smallest group (CelebA val in the paper: 182 per group, 728
        images). `groups` restricts balancing to those group indices (default: all declared groups).
        The draw is deterministic given `seed`; the kept samples stay in dataset order.
        """
        groups = list(range(self.n_groups)) if groups is None else [int(g) for g in groups]
        counts = torch.bincount(self.groups, minlength=self.n_groups)
        empty = [self.group_names[g] for g in groups if int(counts[g]) == 0]
        if empty:
            raise ValueError(
                f"{self.name}: group(s) {empty} have no samples, so no balanced subset exists; "
                "pick other attributes or split, or pass groups=[...] to balance over the non-empty groups"
            )
        smallest = min(int(counts[g]) for g in groups)
        n = smallest if n_per_group is None else int(n_per_group)
        if n > smallest:
            raise ValueError(
                f"{self.name}: n_per_group={n} exceeds the smallest group ({smallest} samples, "
                f"counts {self.group_counts()}); use n_per_group <= {smallest} or None"
            )
        rng = np.random.default_rng(seed)
        keep: list[int] = []
        for g in groups:
            members = torch.nonzero(self.groups == g).flatten().numpy()
            keep.extend(rng.choice(members, size=n, replace=False).tolist())
        return self.subset(sorted(keep), name=f"{self.name}[balanced {n}/group]")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, classes={self.n_classes}, "
            f"groups={self.group_counts()})"
        )
