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
import json
import os
import re
import tarfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sae_clip_plugin.data._io import to_rgb
from sae_clip_plugin.training import distributed
from sae_clip_plugin.training.harvest import ActivationHarvester

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff")
# one sample of a stream: its id and its pixels, or None when the image did not decode
Sample = tuple[str, torch.Tensor | None]
# where one reader slot stands in its part of a pass: (shards of its list finished, samples read of the next one)
SlotPosition = tuple[int, int]
# a sample and the position just after it (a training run saves it to resume there)
PlacedSample = tuple[str, torch.Tensor | None, SlotPosition]
SIZES_FILE = "sizes.json"  # open_clip's convention: {shard file name: samples}, beside the shards


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


def _readable_samples(path: str) -> Iterator[dict[str, Any] | None]:
    """The tar's samples, then None once if it breaks off (a truncated download, a bad block): the samples read
    so far count, the rest of the shard is skipped with a warning, and the run goes on to the next shard."""
    reader = _tar_samples(path)
    n = 0
    while True:
        try:
            sample = next(reader)
        except StopIteration:
            return
        except Exception as err:  # tarfile.ReadError, EOFError, webdataset's own: unreadable from here on
            warnings.warn(
                f"WebDataset shard {path} is unreadable after {n} samples ({err}); skipping the rest of it",
                stacklevel=2,
            )
            yield None
            return
        n += 1
        yield sample


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
        self.shuffle_seed: int | None = None  # training: a new seeded shard order every pass

    def samples(
        self, slot: int, n_slots: int, start: SlotPosition = (0, 0), epoch: int = 0
    ) -> Iterator[PlacedSample]:
        """Slot `slot` of `n_slots`'s part of pass `epoch`, from `start`, each sample with the position after it.

        Samples before `start` are passed over without being decoded (whole shards without being opened).
        """
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        mine, n_slots = slot()
        for key, pixels, _ in self.samples(mine, n_slots):
            yield key, pixels

    def declared_length(self) -> int | None:
        """The images of one pass when the stream says so up front (sizes.json, the hub's split info), else None."""
        return None

    def with_transform(self, transform: Callable) -> StreamingImages:
        """Set the model's preprocess (the stream gives model-ready pixels); returns self."""
        self.transform = transform
        return self

    def _pixels(self, image: Any) -> torch.Tensor:
        if isinstance(image, bytes):
            image = Image.open(io.BytesIO(image))
            image.load()
            # as a folder's files are read (data._io.open_rgb): camera photos upright by their EXIF rotation
            image = ImageOps.exif_transpose(image)
        if self.transform is None:
            raise RuntimeError(
                "set the model's preprocess with stream.with_transform(model.preprocess) first"
            )
        return self.transform(to_rgb(image, name="a streamed image"))

    def _decode(self, image: Any) -> torch.Tensor | None:
        try:
            return self._pixels(image)
        except RuntimeError:
            raise
        except Exception:  # truncated bytes, not an image, a broken header: skipped and counted
            return None

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
        self.spec = shards if isinstance(shards, str) else f"{len(self.shards)} shards"
        if not self.shards:
            raise FileNotFoundError(f"no WebDataset shards in {shards!r}")
        self.name = Path(self.shards[0]).parent.name or "webdataset"

    def shard_order(self, epoch: int) -> list[str]:
        """The shards of pass `epoch`: as listed, or a seeded permutation per pass when training shuffles."""
        if self.shuffle_seed is None:
            return list(self.shards)
        generator = torch.Generator().manual_seed(self.shuffle_seed * 1_000_003 + epoch)
        return [self.shards[i] for i in torch.randperm(len(self.shards), generator=generator).tolist()]

    def samples(
        self, slot: int, n_slots: int, start: SlotPosition = (0, 0), epoch: int = 0
    ) -> Iterator[PlacedSample]:
        mine = self.shard_order(epoch)[slot::n_slots]
        first, skip = start
        for i in range(first, len(mine)):
            url = mine[i]
            for k, sample in enumerate(_readable_samples(url)):
                if sample is None:  # the tar breaks off here: one skipped entry, then the next shard
                    yield f"{Path(url).name}/<unreadable after {k} samples>", None, (i + 1, 0)
                    break
                if i == first and k < skip:
                    continue  # read before the position: passed over, not decoded
                key = f"{Path(url).name}/{sample['__key__']}"
                image = next((sample[s] for s in IMAGE_SUFFIXES if s in sample), None)
                yield key, None if image is None else self._decode(image), (i, k + 1)

    def declared_length(self) -> int | None:
        """The sum of the shards' sizes in a sizes.json beside the first shard, when it lists every shard."""
        sizes_file = Path(self.shards[0]).parent / SIZES_FILE
        if not sizes_file.is_file():
            return None
        sizes = json.loads(sizes_file.read_text())
        names = [Path(url).name for url in self.shards]
        if not isinstance(sizes, dict) or any(name not in sizes for name in names):
            return None
        return sum(int(sizes[name]) for name in names)

    def describe(self) -> dict[str, Any]:
        # the spec, not the list: a LAION run names 100,000 shards, which every SAE's metadata would carry
        return {**super().describe(), "spec": self.spec, "n_shards": len(self.shards)}


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
        for key, pixels, _ in self._examples(part, ranks.rank):
            yield key, pixels

    def samples(
        self, slot: int, n_slots: int, start: SlotPosition = (0, 0), epoch: int = 0
    ) -> Iterator[PlacedSample]:
        """The whole stream for this process; inside a DataLoader worker datasets gives worker `slot` its own
        shards (so `slot` must be the worker's id). Resuming re-reads, without decoding, the samples before
        `start` (a streamed `datasets` set has no cheaper seek that holds across its worker split)."""
        yield from self._examples(self.stream, 0, skip=start[1])

    def _examples(self, part: Any, rank: int, skip: int = 0) -> Iterator[PlacedSample]:
        for i, example in enumerate(part):  # inside a DataLoader worker, datasets gives it its own shards
            if i < skip:
                continue
            value = example[self.image_column] or {}
            key = example.get("__key__") or value.get("path") or f"{self.name}#r{rank}w{_worker()}:{i}"
            data = value.get("bytes")
            if data is None and value.get("path"):
                data = Path(value["path"]).read_bytes()
            yield key, None if data is None else self._decode(data), (0, i + 1)

    def declared_length(self) -> int | None:
        splits = getattr(self.stream.info, "splits", None) or {}
        found = splits.get(self.split) if hasattr(splits, "get") else None
        return int(found.num_examples) if found is not None and found.num_examples else None

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


def is_tar_pattern(text: str) -> bool:
    """A bare WebDataset spec: a .tar file, or a glob / brace range of them (`/data/shard-{000..099}.tar`)."""
    return text.endswith(".tar") and ("{" in text or glob.has_magic(text) or Path(text).is_file())


def is_stream_spec(spec: Any, streaming: bool = False) -> bool:
    """Whether `--images spec` names a stream: `wds:<shards>` or a .tar pattern always, `hf:<name>` with streaming."""
    if isinstance(spec, StreamingImages):
        return True
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = str(spec)
    return text.startswith("wds:") or is_tar_pattern(text) or (streaming and text.startswith("hf:"))


def stream_source(spec: str, split: str = "train", image_column: str | None = None) -> StreamingImages:
    """`wds:<shards>` or a bare .tar pattern (a folder of tars, a glob or a brace range) or `hf:<hub name>` (or a
    local folder `datasets.load_dataset` reads), read as a stream."""
    if spec.startswith("wds:"):
        return WebDatasetImages(spec[4:])
    if is_tar_pattern(spec):
        return WebDatasetImages(spec)
    if spec.startswith("hf:"):
        return HFStreamingImages(spec[3:], split=split, image_column=image_column)
    raise ValueError(
        f"a streamed image set is 'wds:<tar shards>' (or a .tar glob / brace range) or 'hf:<hub name>', not "
        f"{spec!r}; e.g. wds:/data/laion/{{00000..00099}}.tar"
    )
