"""Image sources for harvesting activations: folders, `datasets` datasets, torch datasets/tensors, registered worlds.

Every source is a torch Dataset of pixel tensors [3, S, S] (PIL images go through the model's
preprocess) with a stable id per image, so a disk cache can record exactly which images it holds.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sae_clip_plugin import registry
from sae_clip_plugin.data._io import list_images, open_rgb, to_rgb


class ImageLoadError(RuntimeError):
    """An image of a source could not be read or has the wrong size."""


class ImageSource(Dataset):
    """Base class: `load(i)` gives the raw image, `__getitem__(i)` the model-ready pixel tensor."""

    name: str = "images"

    def __init__(self) -> None:
        self.transform: Callable | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Image.Image | torch.Tensor:
        raise NotImplementedError

    def image_id(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def image_ids(self) -> list[str]:
        return [self.image_id(i) for i in range(len(self))]

    def describe(self) -> dict[str, Any]:
        """What goes into SAE metadata['dataset'] and the cache manifest."""
        return {"type": type(self).__name__, "name": self.name, "n_images": len(self)}

    def with_transform(self, transform: Callable | None) -> ImageSource:
        """A shallow copy that applies `transform` (as `datasets.Dataset.with_transform`; the source is unchanged)."""
        out = copy.copy(self)
        out.transform = transform
        return out

    def set_transform(self, transform: Callable | None) -> None:
        """Apply `transform` to this source in place (as `datasets.Dataset.set_transform`)."""
        self.transform = transform

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            image = self.load(index)
        except Exception as err:
            raise ImageLoadError(
                f"cannot read image {self.image_id(index)} of source {self.name!r} ({type(err).__name__}: {err}); "
                "remove or replace the file, or exclude it from the source"
            ) from err
        if isinstance(image, torch.Tensor) and image.is_floating_point():
            return image  # already preprocessed pixel values
        if isinstance(image, torch.Tensor):
            image = _uint8_to_pil(image)
        if not isinstance(image, Image.Image):
            raise ImageLoadError(
                f"image {self.image_id(index)} is a {type(image).__name__}; sources must give PIL images or tensors"
            )
        if self.transform is None:
            raise RuntimeError(
                "set the model's preprocess with source.with_transform(model.preprocess) first"
            )
        return self.transform(to_rgb(image, name=f"image {self.image_id(index)}"))


def _uint8_to_pil(image: torch.Tensor) -> Image.Image:
    array = image.detach().cpu().numpy()
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"an integer image tensor of dtype {image.dtype} holds values outside 0..255; pass uint8 pixels, or "
            "float pixels already preprocessed"
        )
    return Image.fromarray(array.astype(np.uint8)).convert("RGB")


class FolderSource(ImageSource):
    """Image files under a folder, flat or in class subfolders (searched recursively, sorted)."""

    def __init__(self, root: str | os.PathLike) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist; pass a folder of image files")
        self.files = list_images(self.root, recursive=True)
        self.name = self.root.name

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Image.Image:
        return open_rgb(self.files[index])

    def image_id(self, index: int) -> str:
        return self.files[index].relative_to(self.root).as_posix()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.root)}


class HFDatasetSource(ImageSource):
    """A `datasets.Dataset` whose image column holds images (datasets.Image) or file paths."""

    def __init__(self, dataset: Any, image_column: str | None = None, name: str | None = None) -> None:
        super().__init__()
        self.image_column = image_column or _find_image_column(dataset)
        self.dataset = dataset.select_columns([self.image_column])
        self.name = name or getattr(dataset.info, "dataset_name", None) or "hf_dataset"
        self.fingerprint = getattr(dataset, "_fingerprint", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Image.Image:
        value = self.dataset[int(index)][self.image_column]
        if isinstance(value, (str, os.PathLike)):
            return open_rgb(value)
        if isinstance(value, dict) and value.get("path"):
            return open_rgb(value["path"])
        return value

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image_column": self.image_column, "fingerprint": self.fingerprint}


def _find_image_column(dataset: Any) -> str:
    import datasets  # lazy: datasets

    columns = list(dataset.column_names)
    typed = [c for c, f in dataset.features.items() if isinstance(f, datasets.Image)]
    named = [c for c in ("image", "img", "pixel_values", "path", "file", "filename") if c in columns]
    found = typed or named
    if not found:
        raise ValueError(
            f"no image column found among {columns}; pass image_column='<the column holding images or paths>'"
        )
    return found[0]


def _tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(str((tuple(data.shape), str(data.dtype))).encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


class TensorSource(ImageSource):
    """Images as one tensor: float [N, 3, S, S] = preprocessed pixels; uint8 [N, 3, H, W] or [N, H, W, 3] = raw."""

    def __init__(self, images: torch.Tensor, name: str | None = None) -> None:
        super().__init__()
        if images.ndim != 4:
            raise ValueError(
                f"an image tensor must be [N, 3, S, S] (preprocessed) or uint8 [N, H, W, 3]; got shape "
                f"{tuple(images.shape)}"
            )
        self.images = images
        self.digest = _tensor_digest(images)
        self.name = name or f"tensor:{self.digest}"

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> torch.Tensor:
        return self.images[index]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shape": list(self.images.shape), "dtype": str(self.images.dtype)}


class TorchDatasetSource(ImageSource):
    """Any torch Dataset whose items are images (PIL / tensor) or tuples starting with one."""

    def __init__(self, dataset: Any, name: str | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        self.name = name or getattr(dataset, "name", None) or type(dataset).__name__

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Image.Image | torch.Tensor:
        load_image = getattr(self.dataset, "load_image", None)  # LabelledImageDataset: skip its transform
        item = load_image(index) if callable(load_image) else self.dataset[index]
        return item[0] if isinstance(item, (tuple, list)) else item


class RegisteredSource(TorchDatasetSource):
    """Images a world registered under a name (`sae_clip_plugin.registry`, kind "images"; e.g. "toy": the toy
    CLIP's training stream), rendered lazily."""

    def __init__(self, name: str, n_images: int = 10_000, seed: int = 0) -> None:
        images = registry.lookup("images", name)(n_images, seed=seed)
        super().__init__(images, name=f"{name}-seed{seed}")
        self.seed = seed

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}


class SubsetSource(ImageSource):
    """Some images of another source, in the given order (ids stay those of the parent)."""

    def __init__(self, parent: ImageSource, indices: Sequence[int]) -> None:
        super().__init__()
        self.parent, self.indices = parent, [int(i) for i in indices]
        self.name = parent.name
        self.transform = parent.transform

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Image.Image | torch.Tensor:
        return self.parent.load(self.indices[index])

    def image_id(self, index: int) -> str:
        return self.parent.image_id(self.indices[index])

    def describe(self) -> dict[str, Any]:
        return {**self.parent.describe(), "n_images": len(self)}


def image_source(
    spec: Any,
    *,
    split: str = "train",
    image_column: str | None = None,
    max_images: int | None = None,
    seed: int = 0,
) -> ImageSource:
    """Turn what a user names into an ImageSource.

    `spec`: an ImageSource; a registered image set such as "toy" (the toy world, `max_images` long, default
    10000); "hf:<hub name>";
    a `save_to_disk` folder of a datasets Dataset/DatasetDict; a folder of image files; a
    `datasets.Dataset`; a tensor; or any torch Dataset of images. `max_images` keeps the first N.
    """
    source = _make_source(spec, split=split, image_column=image_column, max_images=max_images, seed=seed)
    if max_images is not None and max_images < len(source):
        source = SubsetSource(source, range(max_images))
    return source


def _make_source(
    spec: Any, *, split: str, image_column: str | None, max_images: int | None, seed: int
) -> ImageSource:
    if isinstance(spec, ImageSource):
        return spec
    if isinstance(spec, torch.Tensor):
        return TensorSource(spec)
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        if registry.find("images", text) is not None:
            return RegisteredSource(text, max_images or 10_000, seed=seed)
        if text.startswith("hf:"):
            return _hub_source(text[3:], split, image_column)
        path = Path(text)
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            import datasets  # lazy: datasets

            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise KeyError(
                        f"{path} has splits {list(loaded)}, not {split!r}; set dataset_split to one of them"
                    )
                loaded = loaded[split]
            return HFDatasetSource(loaded, image_column, name=path.name)
        if path.is_dir():
            return FolderSource(path)
        raise FileNotFoundError(
            f"dataset {text!r} is neither a registered image set ({', '.join(registry.names('images'))}), "
            "'hf:<hub name>' nor an existing folder; "
            "pass a folder of images, a datasets save_to_disk folder or a hub name prefixed with 'hf:'"
        )
    try:
        import datasets  # lazy: datasets

        if isinstance(spec, datasets.DatasetDict):
            return HFDatasetSource(spec[split], image_column)
        if isinstance(spec, datasets.Dataset):
            return HFDatasetSource(spec, image_column)
    except ImportError:  # pragma: no cover - datasets is a sae_lens dependency
        pass
    if isinstance(spec, Dataset) or (hasattr(spec, "__getitem__") and hasattr(spec, "__len__")):
        return TorchDatasetSource(spec)
    raise TypeError(f"cannot make an image source from {type(spec).__name__}; see image_source's docstring")


def _hub_source(name: str, split: str, image_column: str | None) -> ImageSource:
    import datasets  # lazy: datasets

    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as err:
        raise RuntimeError(
            f"could not load {name!r} (split {split!r}) from the Hugging Face hub ({type(err).__name__}: {err}); "
            f"without network, run datasets.load_dataset({name!r}, split={split!r}).save_to_disk(PATH) "
            "elsewhere and pass PATH"
        ) from err
    return HFDatasetSource(loaded, image_column, name=f"{name}:{split}")


def validate_source(source: ImageSource, image_size: int, n_check: int = 8, n_channels: int = 3) -> None:
    """Fail before any work on an empty source or images that do not come out as [3, S, S]."""
    n = len(source)
    if n == 0:
        raise ValueError(
            f"image source {source.name!r} is empty; point dataset at a folder/dataset that contains images"
        )
    expected = (n_channels, image_size, image_size)
    for index in sorted(set(np.linspace(0, n - 1, min(n, n_check)).round().astype(int).tolist())):
        pixels = source[index]
        if not isinstance(pixels, torch.Tensor) or tuple(pixels.shape) != expected:
            shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ImageLoadError(
                f"image {source.image_id(index)} of source {source.name!r} comes out as {shape}, but the model "
                f"expects pixel values of shape {expected}; give raw images (PIL/uint8) so model.preprocess "
                f"resizes them, or preprocess tensors to {image_size}x{image_size} yourself"
            )


def _stack(batch: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(batch)


def image_loader(
    source: ImageSource, indices: Sequence[int], batch_size: int, num_workers: int = 0
) -> DataLoader:
    """Batches of pixel tensors for `indices`, decoded and preprocessed in `num_workers` processes."""
    subset = torch.utils.data.Subset(source, list(indices))
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_stack,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        # its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG, which
        # shifts the mixing buffer's shuffles and makes a live run differ from one reading the cache
        generator=torch.Generator().manual_seed(0),
    )
