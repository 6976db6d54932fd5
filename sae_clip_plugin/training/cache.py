"""A resumable disk cache of activations in sae_lens' cached-activation layout.

Layout (one `datasets.Dataset` per hook, readable with `datasets.load_from_disk(path / hook)` and by
`sae_lens.ActivationsStore(model=None, dataset=None, cached_activations_path=path / hook, ...)`):

    path/
      sae_clip_cache.json        manifest: model, hooks, token selection, image list digest, finished shards
      images.txt                 the image ids, one per line, in row order
      blocks.6.hook_resid_post/  dataset_info.json, state.json, data-00000.arrow, data-00001.arrow, ...

Each row is one image: column `<hook name>` is Array2D(context_size, d_in). Shards of `shard_images`
images are written to temporary names and renamed; the manifest is rewritten (atomically) after every
shard, and each hook's state.json is rebuilt from it, so a killed writer resumes at the first missing
shard and never duplicates or loses an image. bfloat16 has no Arrow type: it is stored as raw uint16
bits in a column named `<hook>.bfloat16_bits`, which only this module reads (sae_lens then fails loudly
on the missing hook column instead of reading bits as numbers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_clip_plugin.atomic import atomic_write_json, atomic_write_text
from sae_clip_plugin.locking import LOCK_NAME, folder_lock
from sae_clip_plugin.training import distributed, plan
from sae_clip_plugin.training.distributed import Ranks
from sae_clip_plugin.training.harvest import ActivationHarvester
from sae_clip_plugin.training.sources import ImageSource

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

MANIFEST = "sae_clip_cache.json"
IMAGES = "images.txt"
FORMAT = "sae_clip_plugin.activation_cache"
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
# what must agree for two runs to share a cache
MATCH_KEYS = (
    "model_spec",
    "model_fingerprint",
    "hook_names",
    "token_selection",
    "storage_dtype",
    "shard_images",
    "n_images",
    "images_sha256",
)


class CacheMismatchError(ValueError):
    """The cache on disk was written for another model, hooks, token selection or image list."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the image tower's weights (text tower excluded), so a cache cannot mix models."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        if name.startswith("text."):
            continue
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:32]


def images_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def column_name(hook_name: str, storage_dtype: str) -> str:
    return f"{hook_name}.bfloat16_bits" if storage_dtype == "bfloat16" else hook_name


def _features(hook_name: str, storage_dtype: str, context_size: int, d_in: int) -> Any:
    from datasets import Array2D, Features  # lazy: datasets

    arrow_dtype = "uint16" if storage_dtype == "bfloat16" else storage_dtype
    return Features(
        {column_name(hook_name, storage_dtype): Array2D(shape=(context_size, d_in), dtype=arrow_dtype)}
    )


def _to_storage(acts: torch.Tensor, storage_dtype: str) -> np.ndarray:
    acts = acts.detach().to("cpu")
    if storage_dtype == "bfloat16":
        return acts.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
    return acts.to(getattr(torch, storage_dtype)).contiguous().numpy()


def _shard_dataset(acts: torch.Tensor, hook_name: str, storage_dtype: str) -> Any:
    """[n, context, d_in] -> a one-column datasets.Dataset, built from the buffer without per-row copies."""
    # lazy: datasets, pyarrow
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    n, context_size, d_in = acts.shape
    features = _features(hook_name, storage_dtype, context_size, d_in)
    name = column_name(hook_name, storage_dtype)
    values = pa.array(_to_storage(acts, storage_dtype).reshape(-1))
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * context_size * d_in + 1, d_in, dtype=np.int32)), values
    )
    outer = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * context_size + 1, context_size, dtype=np.int32)), inner
    )
    column = pa.ExtensionArray.from_storage(features[name](), outer)
    # an explicit fingerprint spares datasets from hashing the whole table (state.json gets its own anyway)
    return Dataset(
        InMemoryTable(pa.table({name: column})),
        info=DatasetInfo(features=features),
        fingerprint=os.urandom(8).hex(),
    )


def _write_arrow(dataset: Any, target: Path) -> None:
    """Save a one-shard dataset and move its arrow file to `target` (atomic rename)."""
    import datasets  # lazy: datasets

    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=target.parent) as tmp:
        quiet = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # one bar per shard file would drown the cache's own bar
        try:
            dataset.save_to_disk(tmp, num_shards=1)
        finally:
            if not quiet:
                datasets.enable_progress_bars()
        (arrow,) = Path(tmp).glob("*.arrow")
        if not (target.parent / "dataset_info.json").exists():
            # a name of this process's own: the ranks of a distributed harvest may write it at the same time
            staged = target.parent / f".tmp-dataset_info-{os.getpid()}.json"
            shutil.copy2(Path(tmp) / "dataset_info.json", staged)
            os.replace(staged, target.parent / "dataset_info.json")
        os.replace(arrow, target)


def shard_file(shard: int) -> str:
    return f"data-{shard:05d}.arrow"


# shards a rank of a distributed harvest finished (all hooks' files in place), not yet in the manifest: one
# empty file per shard, so ranks never write the manifest at the same time; merged by rank 0 (or a resume)
RANKS_DONE = ".ranks-done"


def mark_done(path: Path, shard: int) -> None:
    """Record that every hook's file of `shard` is in place (called after the renames)."""
    folder = path / RANKS_DONE
    folder.mkdir(exist_ok=True)
    (folder / f"{shard:05d}").touch()


def merge_done(cache: ActivationDiskCache) -> None:
    """Move the shards the ranks recorded into the manifest (then state.json), and drop the records."""
    folder = cache.path / RANKS_DONE
    if not folder.is_dir():
        return
    done = {int(p.name) for p in folder.iterdir() if p.name.isdigit()}
    cache.manifest["completed_shards"] = sorted({*cache.manifest["completed_shards"], *done})
    cache._write_manifest()
    cache._write_states()
    shutil.rmtree(folder, ignore_errors=True)


class ActivationDiskCache:
    """Read side of the cache (and the manifest bookkeeping the writer shares)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{self.path} is not an activation cache (no {MANIFEST}); build one with write_activation_cache"
            )
        self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest} is not a sae_clip_plugin activation-cache manifest")
        self._tables: dict[str, Any] = {}

    # -- description ---------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def hook_names(self) -> list[str]:
        return list(self.config["hook_names"])

    @property
    def token_selection(self) -> str:
        return self.config["token_selection"]

    @property
    def storage_dtype(self) -> str:
        return self.config["storage_dtype"]

    @property
    def geometry(self) -> dict[str, dict[str, Any]]:
        return self.manifest["geometry"]

    @property
    def context_size(self) -> int:
        return next(iter(self.geometry.values()))["context_size"]

    def d_in(self, hook_name: str) -> int:
        return self.geometry[self._check_hook(hook_name)]["d_in"]

    @property
    def n_shards(self) -> int:
        return -(-self.config["n_images"] // self.config["shard_images"])

    @property
    def completed_shards(self) -> list[int]:
        return sorted(self.manifest["completed_shards"])

    @property
    def complete(self) -> bool:
        return len(self.completed_shards) == self.n_shards

    @property
    def n_images(self) -> int:
        """Images readable now: the finished shards form a prefix once the cache is complete."""
        done = set(self.completed_shards)
        n, shard = 0, 0
        while shard in done:
            n = min(self.config["n_images"], (shard + 1) * self.config["shard_images"])
            shard += 1
        return n

    def image_ids(self) -> list[str]:
        return (self.path / IMAGES).read_text(encoding="utf-8").splitlines()

    def hook_path(self, hook_name: str) -> Path:
        return self.path / self._check_hook(hook_name)

    def _check_hook(self, hook_name: str) -> str:
        if hook_name not in self.geometry:
            raise KeyError(f"the cache at {self.path} holds hooks {self.hook_names}, not {hook_name!r}")
        return hook_name

    # -- reading ---------------------------------------------------------------------------------
    def dataset(self, hook_name: str) -> Any:
        """The hook's `datasets.Dataset` (one row per image), as sae_lens loads it."""
        import datasets  # lazy: datasets

        return datasets.load_from_disk(str(self.hook_path(hook_name)))

    def _table(self, hook_name: str) -> Any:
        if hook_name not in self._tables:
            self._tables[hook_name] = self.dataset(hook_name).data.table
        return self._tables[hook_name]

    def read(self, hook_name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a float32 tensor [images, context_size, d_in], straight from the arrow buffers.

        A damaged shard (truncated, or holding NaN/inf bytes) is named with the hook folder and the image rows and
        the fix, instead of an Arrow byte count or a training loss blamed on the learning rate.
        """
        try:
            out = self._read(hook_name, start, stop)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid / ArrowIOError among them
            raise OSError(
                f"the activation cache at {self.path / hook_name} cannot be read at images [{start}, {stop}) "
                f"({' '.join(str(err).split())[:160]}): a shard is truncated or damaged; delete the cache folder "
                "to rebuild it (or restore it from a copy)"
            ) from None
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out.flatten(1))).any(1).nonzero()[0]) + start
            raise ValueError(
                f"the activation cache at {self.path / hook_name} holds NaN/inf values (first at image row {bad}): the "
                "cache files are damaged (the harvest refuses non-finite activations); delete the cache to rebuild it"
            )
        return out

    def _read(self, hook_name: str, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start <= stop <= self.n_images:
            raise IndexError(
                f"rows [{start}, {stop}) outside the {self.n_images} cached images of {self.path}"
            )
        geom = self.geometry[self._check_hook(hook_name)]
        column = (
            self._table(hook_name)
            .column(column_name(hook_name, self.storage_dtype))
            .slice(start, stop - start)
        )
        parts = [chunk.storage.flatten().flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
        flat = np.concatenate(parts) if len(parts) != 1 else parts[0]
        if self.storage_dtype == "bfloat16":
            flat = flat.view(np.int16)
        if not flat.flags.writeable and self.storage_dtype == "float32":
            flat = flat.copy()  # a read-only view of the memory-mapped file: hand out our own memory
        with warnings.catch_warnings():  # float16/bf16 views are read-only too, but .to(float32) copies them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(flat)
        if self.storage_dtype == "bfloat16":
            tensor = tensor.view(torch.bfloat16)
        return tensor.to(torch.float32).reshape(stop - start, geom["context_size"], geom["d_in"])

    def read_images(
        self, start: int, stop: int, hook_names: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        return {name: self.read(name, start, stop) for name in (hook_names or self.hook_names)}

    def activations_store(
        self,
        hook_name: str,
        train_batch_size_tokens: int = 4096,
        n_batches_in_buffer: int = 8,
        store_batch_size_prompts: int = 8,
        total_training_tokens: int | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> Any:
        """A sae_lens ActivationsStore over this cache (model=None, dataset=None)."""
        from sae_lens import ActivationsStore  # lazy: sae_lens

        if self.storage_dtype == "bfloat16":
            raise ValueError(
                f"the cache at {self.path} stores bfloat16 as raw bits, which sae_lens cannot read; "
                "rebuild it with storage_dtype='float16' or 'float32' to use ActivationsStore"
            )
        return ActivationsStore(
            model=None,  # type: ignore[arg-type]  # cached activations need no model
            dataset=None,
            streaming=False,
            hook_name=hook_name,
            hook_head_index=None,
            context_size=self.context_size,
            d_in=self.d_in(hook_name),
            n_batches_in_buffer=n_batches_in_buffer,
            total_training_tokens=total_training_tokens or self.n_images * self.context_size,
            store_batch_size_prompts=store_batch_size_prompts,
            train_batch_size_tokens=train_batch_size_tokens,
            prepend_bos=False,
            normalize_activations="none",
            device=torch.device(device),
            dtype=dtype,
            cached_activations_path=str(self.hook_path(hook_name)),
        )

    # -- bookkeeping (writer side) -----------------------------------------------------------------
    def _write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def _write_states(self) -> None:
        """Rebuild every hook's state.json from the manifest: the datasets see exactly the finished shards."""
        shards = self.completed_shards
        fingerprint = hashlib.sha256(json.dumps([self.config, shards]).encode()).hexdigest()[:16]
        for name in self.hook_names:
            folder = self.path / name
            folder.mkdir(parents=True, exist_ok=True)
            state = {
                "_data_files": [{"filename": shard_file(s)} for s in shards],
                "_fingerprint": fingerprint,
                "_format_columns": None,
                "_format_kwargs": {},
                "_format_type": None,
                "_output_all_columns": False,
                "_split": None,
            }
            atomic_write_json(folder / "state.json", state)
        self._tables.clear()

    def check_matches(self, config: dict[str, Any]) -> None:
        """Raise CacheMismatchError naming every field that differs from `config`."""
        diffs = [
            f"{key}: cache has {self.config.get(key)!r}, this run has {config.get(key)!r}"
            for key in MATCH_KEYS
            if self.config.get(key) != config.get(key)
        ]
        if diffs:
            detail = "; ".join(d if len(d) < 300 else d[:300] + "..." for d in diffs)
            raise CacheMismatchError(
                f"the activation cache at {self.path} was written for another configuration ({detail}). "
                "Use another cache_path, or delete the folder to rebuild it"
            )


def cache_config(
    model: HookedViT,
    source: ImageSource,
    harvester: ActivationHarvester,
    storage_dtype: str,
    shard_images: int,
) -> tuple[dict[str, Any], list[str]]:
    ids = source.image_ids()
    config = {
        "model_spec": model.cfg.model_spec,
        "model_fingerprint": model_fingerprint(model),
        "hook_names": list(harvester.hook_names),
        "token_selection": harvester.token_selection,
        "storage_dtype": storage_dtype,
        "shard_images": shard_images,
        "n_images": len(ids),
        "images_sha256": images_digest(ids),
    }
    return config, ids


def write_activation_cache(
    path: str | os.PathLike,
    model: HookedViT,
    source: ImageSource,
    hook_names: Sequence[str],
    token_selection: str = "all",
    *,
    storage_dtype: str = "float32",
    shard_images: int = 1024,
    batch_size: int = 64,
    num_workers: int = 0,
    harvester: ActivationHarvester | None = None,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
    ignore_free_space: bool = False,
    ranks: Ranks | None = None,
) -> ActivationDiskCache:
    """Harvest `source` at `hook_names` into a cache at `path`, resuming whatever a previous call left.

    `on_shard(i)` is called after shard i is durably written (handy for progress or tests). Before any work
    the bytes to write per hook are printed (with `progress`) and a cache that does not fit the disk is refused
    unless `ignore_free_space`. `ranks` (default: the initialised torch.distributed process group, else one
    process) splits the shards across the processes of a torchrun job; the cache is the same, byte for byte.
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
    if shard_images < 1:
        raise ValueError(f"shard_images must be >= 1, got {shard_images}")
    path = Path(path)
    harvester = harvester or ActivationHarvester(
        model, hook_names, token_selection, batch_size=batch_size, num_workers=num_workers
    )
    if (
        list(harvester.hook_names) != list(dict.fromkeys(hook_names))
        or harvester.token_selection != token_selection
    ):
        raise ValueError("the harvester given was built for other hooks or another token selection")
    source.set_transform(source.transform or model.preprocess)
    config, ids = cache_config(model, source, harvester, storage_dtype, shard_images)
    if not ids:
        raise ValueError(f"image source {source.name!r} is empty; nothing to cache")
    finished = _finished(path, config)
    if finished is not None:
        return finished
    ranks = ranks or distributed.current_group()
    if ranks.distributed:
        from sae_clip_plugin.training.cache_ranks import write_across_ranks  # lazy: it builds on this module

        return write_across_ranks(
            path, model, source, harvester, config, ids, ranks, progress, on_shard, ignore_free_space
        )
    with folder_lock(path, "activation cache"):
        cache = _open_or_create(path, model, source, harvester, config, ids)
        todo = missing_shards(cache)
        check_space(cache, harvester, todo, progress, ignore_free_space)
        return _write_shards(cache, source, harvester, todo, progress, on_shard)


def _finished(path: Path, config: dict[str, Any]) -> ActivationDiskCache | None:
    """A complete cache written for `config`, opened without the lock: nothing will write it again, so the ranks
    of a job (each training its own hook) can all open it at once."""
    if not (path / MANIFEST).is_file() or (path / RANKS_DONE).exists():
        return None
    cache = ActivationDiskCache(path)
    cache.check_matches(config)
    return cache if cache.complete else None


def missing_shards(cache: ActivationDiskCache) -> list[int]:
    done = set(cache.completed_shards)
    return [s for s in range(cache.n_shards) if s not in done]


def shard_bounds(config: dict[str, Any], shard: int) -> tuple[int, int]:
    """Images [start, stop) of `shard`."""
    k, n = config["shard_images"], config["n_images"]
    return shard * k, min(n, (shard + 1) * k)


def check_space(
    cache: ActivationDiskCache,
    harvester: ActivationHarvester,
    todo: Sequence[int],
    progress: bool,
    ignore_free_space: bool,
) -> None:
    """Print what the missing shards will write (per hook) against the free space; refuse if it does not fit."""
    if not todo:
        return
    n = sum(stop - start for start, stop in (shard_bounds(cache.config, s) for s in todo))
    planned = plan.plan_harvest(cache.path, n, harvester.context_size, harvester.d_in, cache.storage_dtype)
    if progress:
        print("\n".join(planned.lines()), file=sys.stderr)
    plan.check_plan(planned, cache.path, ignore_free_space)


def _write_shards(
    cache: ActivationDiskCache,
    source: ImageSource,
    harvester: ActivationHarvester,
    todo: list[int],
    progress: bool,
    on_shard: Callable[[int], None] | None,
    record: Callable[[int], None] | None = None,
    desc: str = "Caching activations",
    share: bool = False,
) -> ActivationDiskCache:
    """The shards `todo`, one at a time, each recorded once all its files are in place.

    `record(shard)` says where a finished shard is noted: the manifest by default (the caller holds the folder's
    lock); a rank of a distributed harvest notes it in RANKS_DONE instead, and its bar counts its `share` alone.
    """
    path, config = cache.path, cache.config

    def to_manifest(shard: int) -> None:
        cache.manifest["completed_shards"] = sorted({*cache.manifest["completed_shards"], shard})
        cache._write_manifest()
        cache._write_states()

    record = record or to_manifest
    # a finished cache shows no bar (it would print "Caching activations 100%" at every reuse)
    bar = tqdm(
        total=len(todo) if share else cache.n_shards,
        initial=0 if share else cache.n_shards - len(todo),
        desc=desc,
        unit="shard",
        disable=not progress or not todo,
    )
    try:
        shard_images, storage_dtype = config["shard_images"], config["storage_dtype"]
        for shard, acts in _shards(harvester, source, todo, shard_images, config["n_images"]):
            for name in harvester.hook_names:
                _write_arrow(_shard_dataset(acts[name], name, storage_dtype), path / name / shard_file(shard))
            record(shard)
            bar.update(1)
            if on_shard is not None:
                on_shard(shard)
    finally:
        bar.close()
    return cache


def _shards(
    harvester: ActivationHarvester, source: ImageSource, todo: list[int], shard_images: int, n_images: int
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """One image loader over all missing shards, regrouped into whole shards as batches arrive."""
    if not todo:
        return
    bounds = [(s, s * shard_images, min(n_images, (s + 1) * shard_images)) for s in todo]
    indices = [i for _, start, stop in bounds for i in range(start, stop)]
    pending: dict[str, list[torch.Tensor]] = {name: [] for name in harvester.hook_names}
    position, have = 0, 0
    for batch in harvester.iter_batches(source, indices):
        size, offset = next(iter(batch.values())).shape[0], 0
        while offset < size:
            shard, start, stop = bounds[position]
            take = min(stop - start - have, size - offset)
            for name in pending:
                pending[name].append(batch[name][offset : offset + take])
            have, offset = have + take, offset + take
            if have == stop - start:
                yield shard, {name: torch.cat(parts) for name, parts in pending.items()}
                pending = {name: [] for name in harvester.hook_names}
                position, have = position + 1, 0


def _open_or_create(
    path: Path,
    model: HookedViT,
    source: ImageSource,
    harvester: ActivationHarvester,
    config: dict[str, Any],
    ids: list[str],
) -> ActivationDiskCache:
    if (path / MANIFEST).is_file():
        cache = ActivationDiskCache(path)
        cache.check_matches(config)
    else:
        if path.exists() and any(p for p in path.iterdir() if not p.name.startswith((".tmp-", LOCK_NAME))):
            raise FileExistsError(
                f"{path} exists and is not an activation cache; pick an empty or new folder for cache_path"
            )
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / IMAGES, "\n".join(ids) + "\n")
        import sae_lens  # lazy: sae_lens

        manifest = {
            "format": FORMAT,
            "version": 1,
            "config": config,
            "geometry": {name: g.to_dict() for name, g in harvester.geometry.items()},
            "model": model.cfg.to_dict(),
            "dataset": source.describe(),
            "sae_lens_version": sae_lens.__version__,
            "completed_shards": [],
        }
        atomic_write_json(path / MANIFEST, manifest)
        cache = ActivationDiskCache(path)
    for leftover in [*path.glob(".tmp-*"), *path.glob("*/.tmp-*")]:  # debris of a killed writer
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    merge_done(cache)  # shards the ranks of a killed distributed harvest finished
    cache._write_states()
    return cache


def iter_cached_images(
    cache: ActivationDiskCache, hook_names: Sequence[str], order: Sequence[int], chunk_images: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Activations chunk by chunk: `order` lists chunk indices (chunk c = images [c*k, (c+1)*k))."""
    n = cache.n_images
    for chunk in order:
        start, stop = chunk * chunk_images, min(n, (chunk + 1) * chunk_images)
        yield cache.read_images(start, stop, hook_names)
