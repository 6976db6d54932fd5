"""The image sets of a demo run: the toy world by default, or a user's image folder.

Toy world: SAEs train on the CLIP training stream; metrics use labelled clean shapes; steering reads
out over the toy vocabulary (its concepts and every word its images can show); disentanglement runs the three toy tasks.
Image folder: every set is drawn from the folder; class subfolders give zero-shot labels and a
generated typographic task (a wrong class name written on each image); a flat folder gives neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sae_clip_plugin.demo.config import DemoConfig
from sae_clip_plugin.toy import background_spurious_set, colour_spurious_set, typographic_set
from sae_clip_plugin.toy.registration import TASKS as TOY_TASKS

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def has_class_folders(root: str | Path) -> bool:
    """True when `root` holds at least two non-hidden subfolders (one per class)."""
    root = Path(root)
    return sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) >= 2


class DemoData:
    """Builds each image set on demand for `model` (a HookedViT)."""

    def __init__(self, cfg: DemoConfig, model: HookedViT) -> None:
        self.cfg, self.model = cfg, model
        if cfg.images is not None and not Path(cfg.images).is_dir():
            raise FileNotFoundError(f"--images {cfg.images}: no such folder; pass a folder of images")

    # -- the SAE training images ---------------------------------------------------------------
    @property
    def dataset_spec(self) -> str:
        """What VisionSAERunnerConfig.dataset names ("toy" or the folder)."""
        return "toy" if self.cfg.is_toy_world else str(self.cfg.images)

    def train_source(self) -> Any:
        from sae_clip_plugin.training.sources import image_source  # lazy: torchvision (sae_clip_plugin.data)

        source = image_source(self.dataset_spec, max_images=self.cfg["n_train_images"], seed=self.cfg.seed)
        return source.with_transform(self.model.preprocess)

    def _folder(self, n: int) -> Any:
        # lazy: torchvision (sae_clip_plugin.data)
        from sae_clip_plugin.training.sources import SubsetSource, image_source

        source = image_source(str(self.cfg.images)).with_transform(self.model.preprocess)
        return SubsetSource(source, range(min(n, len(source)))).with_transform(self.model.preprocess)

    # -- metrics -----------------------------------------------------------------------------------
    def metric_images(self) -> tuple[Any, list[str] | None, list[str] | None]:
        """(images, class names, templates) for the metrics (names None: no zero-shot labels)."""
        n = self.cfg["n_metric_images"]
        if self.cfg.is_toy_world:
            from sae_clip_plugin.data import load_labelled_images  # lazy: torchvision (sae_clip_plugin.data)

            return load_labelled_images("toy", n, seed=4321 + self.cfg.seed)
        if has_class_folders(self.cfg.images):
            from sae_clip_plugin.data import load_image_folder  # lazy: torchvision (sae_clip_plugin.data)

            dataset = load_image_folder(self.cfg.images)
            if len(dataset) > n:  # an even spread over the (sorted) classes
                step = len(dataset) / n
                dataset = dataset.subset([int(i * step) for i in range(n)])
            return dataset, list(dataset.classnames), list(dataset.templates)
        return self._folder(n), None, None

    # -- steering ----------------------------------------------------------------------------------
    def steer_pixels(self) -> torch.Tensor:
        # lazy: torchvision (sae_clip_plugin.data)
        from sae_clip_plugin.analysis.pixels import as_pixels
        from sae_clip_plugin.training.sources import image_source

        n = self.cfg["n_steer_images"]
        if self.cfg.is_toy_world:
            source = image_source("toy", max_images=n, seed=self.cfg.seed + 1).with_transform(
                self.model.preprocess
            )
        else:
            source = self._folder(n)
        return as_pixels(self.model, source)

    @property
    def vocabulary(self) -> str | None:
        """The toy concepts for the toy model, open_clip's ImageNet class names otherwise."""
        return "toy" if self.cfg.model_spec == "toy" else None

    # -- dashboards --------------------------------------------------------------------------------
    def dashboard_images(self) -> Any:
        """A mix that shows what features respond to: typographic twins and both spurious sets (toy)."""
        n = self.cfg["n_dashboard_images"]
        if not self.cfg.is_toy_world:
            return self._folder(n)

        sets = [
            typographic_set(max(1, n // 4), seed=7000 + self.cfg.seed),
            background_spurious_set(max(1, n // 16), seed=7001 + self.cfg.seed),
            colour_spurious_set(max(1, n // 16), seed=7002 + self.cfg.seed),
        ]
        return [ds[i][0] for ds in sets for i in range(len(ds))]

    # -- disentanglement ---------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        if self.cfg.is_toy_world:
            return list(TOY_TASKS)
        return ["typo-generate"] if has_class_folders(self.cfg.images) else []

    def task(self, name: str) -> Any:
        # lazy: torchvision (sae_clip_plugin.data)
        from sae_clip_plugin.analysis.disentangle import tasks as T

        n = self.cfg["n_disentangle"]
        if name in TOY_TASKS:
            return T.build_task(self.model, name, n_select=n, n_eval=n, seed=self.cfg.seed)
        if name == "typo-generate":
            # lazy: torchvision (sae_clip_plugin.data)
            from sae_clip_plugin.data import TypographicConfig, load_image_folder, make_typographic_dataset

            base = load_image_folder(self.cfg.images)
            if len(base) > 2 * n:
                step = len(base) / (2 * n)
                base = base.subset([int(i * step) for i in range(2 * n)])
            ds = make_typographic_dataset(
                base, TypographicConfig(size=self.model.cfg.image_size, seed=self.cfg.seed)
            )
            return T.task_from_dataset(self.model, ds, kind="typographic", seed=self.cfg.seed, name=name)
        raise ValueError(f"unknown demo task {name!r}")
