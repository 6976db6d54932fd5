"""Image sets read as streams: WebDataset tar shards (LAION / DataComp) and `hf:<name>` with streaming=True.

Images are decoded on the fly and never stored. The shard list is split across the ranks of a torchrun job and
the DataLoader workers of each rank: the tar at position i of the list goes to slot i mod (ranks x workers),
slot = rank x workers + worker (torch's `get_worker_info`); a streamed `datasets` set is split by
`datasets.distributed.split_dataset_by_node` and then by its own worker split, both maintained by datasets.
So every image is read exactly once. A sample that does not decode is skipped and counted (`StreamHarvest`),
never a crash half-way through a day-long harvest.

    stream = webdataset_images("/data/laion/{00000..00099}.tar").with_transform(model.preprocess)
    harvest = StreamHarvest(harvester, stream, batch_size=256, num_workers=8)
    for ids, acts in harvest: ...           # {hook: [batch, context, d_in]}
    harvest.skipped                         # corrupt samples met so far
"""

from __future__ import annotations

import glob
import io
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sae_clip_plugin.data._io import to_rgb
from sae_clip_plugin.training import distributed
from sae_clip_plugin.training.harvest import ActivationHarvester

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff")
# one sample of a stream: its id and its pixels, or None when the image did not decode
Sample = tuple[str, torch.Tensor | None]


def expand_shards(spec: str | list[str]) -> list[str]:
    """Tar shards named by a list, a folder (its *.tar, sorted), a glob, or a brace range `shard-{000..099}.tar`."""
    if isinstance(spec, list):
        return list(spec)
    match = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if match:
        lo, hi, width = int(match[1]), int(match[2]), len(match[1])
        return [spec[: match.start()] + f"{i:0{width}d}" + spec[match.end() :] for i in range(lo, hi + 1)]
    if Path(spec).is_dir():
        return sorted(str(p) for p in Path(spec).glob("*.tar"))
    found = sorted(glob.glob(spec))
    if not found:
        raise FileNotFoundError(
            f"no WebDataset shards match {spec!r}; give a folder of .tar files, a glob or a range such as "
            "/data/shard-{000000..000099}.tar"
        )
    return found


def _tar_samples(path: str) -> Iterator[dict[str, Any]]:
    """One tar's samples as webdataset groups them (files sharing a key up to the first dot of the basename).

    The `webdataset` package reads them when installed (`pip install sae_clip_plugin[stream]`); otherwise the
    standard library's tarfile reads the same plain tars the same way.
    """
    try:
        from webdataset.tariterators import tarfile_samples
    except ImportError:
        yield from _stdlib_tar_samples(path)
        return
    yield from tarfile_samples([{"url": path}])


def _stdlib_tar_samples(path: str) -> Iterator[dict[str, Any]]:
    current: dict[str, Any] | None = None
    with tarfile.open(path, mode="r|*") as stream:
        for member in stream:
            if not member.isreg():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, dot, suffix = base.partition(".")
            if not dot or base.startswith("__"):
                continue
            key = f"{folder}/{stem}" if folder else stem
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": path}
            data = stream.extractfile(member)
            current[suffix.lower()] = data.read() if data is not None else b""
    if current is not None:
        yield current


class StreamingImages(IterableDataset):
    """Base of the streamed sources: yields (id, pixels or None) for this rank's and this worker's part."""

    name: str = "stream"

    def __init__(self) -> None:
        super().__init__()
        self.transform: Callable | None = None

    def with_transform(self, transform: Callable) -> StreamingImages:
        """Set the model's preprocess (the stream gives model-ready pixels); returns self."""
        self.transform = transform
        return self

    def _pixels(self, image: Any) -> torch.Tensor:
        if isinstance(image, bytes):
            image = Image.open(io.BytesIO(image))
            image.load()
        if self.transform is None:
            raise RuntimeError(
                "set the model's preprocess with stream.with_transform(model.preprocess) first"
            )
        return self.transform(to_rgb(image, name="a streamed image"))

    def _decoded(self, key: str, image: Any) -> Sample:
        try:
            return key, self._pixels(image)
        except RuntimeError:
            raise
        except Exception:  # truncated bytes, not an image, a broken header: skipped and counted
            return key, None

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "name": self.name}


def slot() -> tuple[int, int]:
    """(this reader's slot, slots in the job): rank x workers + worker, of ranks x workers."""
    ranks = distributed.current_group()
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return ranks.rank * workers + worker, ranks.world_size * workers


class WebDatasetImages(StreamingImages):
    """WebDataset tar shards: image + caption (+ anything) per key; the image is the first image-suffixed file."""

    def __init__(self, shards: str | list[str]) -> None:
        super().__init__()
        self.shards = expand_shards(shards)
        if not self.shards:
            raise FileNotFoundError(f"no WebDataset shards in {shards!r}")
        self.name = Path(self.shards[0]).parent.name or "webdataset"

    def __iter__(self) -> Iterator[Sample]:
        mine, n_slots = slot()
        for url in self.shards[mine::n_slots]:
            for sample in _tar_samples(url):
                key = f"{Path(url).name}/{sample['__key__']}"
                image = next((sample[s] for s in IMAGE_SUFFIXES if s in sample), None)
                yield (key, None) if image is None else self._decoded(key, image)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shards": self.shards}


class HFStreamingImages(StreamingImages):
    """`datasets.load_dataset(name, split=..., streaming=True)`: split by node, then by datasets' worker split."""

    def __init__(self, name: str, split: str = "train", image_column: str | None = None) -> None:
        import datasets  # lazy: datasets

        super().__init__()
        self.name, self.split = name, split
        try:
            stream = datasets.load_dataset(name, split=split, streaming=True)
        except Exception as err:
            raise RuntimeError(
                f"could not open {name!r} (split {split!r}) as a stream ({type(err).__name__}: {err}); check the "
                "name and the network, or pass a local folder"
            ) from err
        columns = list(stream.features or {})
        self.image_column = image_column or next(
            (c for c in ("image", "jpg", "png", "webp", "img") if c in columns), None
        )
        if self.image_column is None:
            raise ValueError(f"no image column among {columns}; set image_column")
        # raw bytes: a corrupt image is ours to skip and count, not an error inside datasets' decoder
        self.stream = stream.cast_column(self.image_column, datasets.Image(decode=False))

    def __iter__(self) -> Iterator[Sample]:
        from datasets.distributed import split_dataset_by_node

        ranks = distributed.current_group()
        part = split_dataset_by_node(self.stream, rank=ranks.rank, world_size=ranks.world_size)
        for i, example in enumerate(part):  # inside a DataLoader worker, datasets gives it its own shards
            value = example[self.image_column] or {}
            key = example.get("__key__") or value.get("path") or f"{self.name}#r{ranks.rank}w{_worker()}:{i}"
            data = value.get("bytes")
            if data is None and value.get("path"):
                data = Path(value["path"]).read_bytes()
            yield (key, None) if data is None else self._decoded(key, data)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "split": self.split, "image_column": self.image_column}


def _worker() -> int:
    info = get_worker_info()
    return info.id if info is not None else 0


def _collate(samples: list[Sample]) -> tuple[list[str], torch.Tensor | None, int]:
    """Good samples stacked, corrupt ones counted (workers cannot add to a counter of the main process)."""
    good = [(k, p) for k, p in samples if p is not None]
    pixels = torch.stack([p for _, p in good]) if good else None
    return [k for k, _ in good], pixels, len(samples) - len(good)


@dataclass
class StreamHarvest:
    """Activations of a streamed source, batch by batch: iterate for (ids, {hook: acts}); `skipped` counts the
    samples that did not decode, `seen` the images harvested (this rank's)."""

    harvester: ActivationHarvester
    stream: StreamingImages
    batch_size: int = 64
    num_workers: int = 0
    skipped: int = 0
    seen: int = 0
    ids: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[list[str], dict[str, torch.Tensor]]]:
        loader = DataLoader(
            self.stream,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate,
            generator=torch.Generator().manual_seed(0),  # leave the global RNG alone (as image_loader)
        )
        model = self.harvester.model
        was_training = model.training
        model.eval()
        try:
            for ids, pixels, bad in loader:
                self.skipped += bad
                if pixels is None:
                    continue
                self.seen += len(ids)
                self.ids.extend(ids)
                yield ids, self.harvester.activations(pixels)
        finally:
            model.train(was_training)


def stream_source(spec: str, split: str = "train", image_column: str | None = None) -> StreamingImages:
    """`wds:<shards>` (a folder of tars, a glob or a brace range) or `hf:<hub name>`, read as a stream."""
    if spec.startswith("wds:"):
        return WebDatasetImages(spec[4:])
    if spec.startswith("hf:"):
        return HFStreamingImages(spec[3:], split=split, image_column=image_column)
    raise ValueError(
        f"a streamed image set is 'wds:<tar shards>' or 'hf:<hub name>', not {spec!r}; "
        "e.g. wds:/data/laion/{00000..00099}.tar"
    )
