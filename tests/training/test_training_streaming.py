"""Streamed sources: WebDataset tars and a streamed `datasets` set, split over 2 ranks x 2 DataLoader workers,
each image harvested exactly once with the activations of the same images read from files; a corrupt sample
is skipped and counted."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sae_clip_plugin.training import ActivationHarvester, distributed, streaming
from sae_clip_plugin.training.distributed import Ranks

HOOK = "blocks.1.hook_resid_post"
N_TARS, PER_TAR = 4, 5
CORRUPT = "shard-00002.tar/s00002_0003"


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 37, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tars(folder: Path) -> dict[str, bytes]:
    """N_TARS WebDataset shards of PER_TAR samples (png + txt caption); one png is truncated. Returns id -> png."""
    folder.mkdir()
    images = {}
    for t in range(N_TARS):
        with tarfile.open(folder / f"shard-{t:05d}.tar", "w") as tar:
            for i in range(PER_TAR):
                key = f"s{t:05d}_{i:04d}"
                data = png(t * 100 + i)
                if f"shard-{t:05d}.tar/{key}" == CORRUPT:
                    data = data[: len(data) // 3]
                else:
                    images[f"shard-{t:05d}.tar/{key}"] = data
                for suffix, payload in (("png", data), ("txt", f"caption {key}".encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return images


def harvest_as_rank(monkeypatch, stream, harvester, rank: int) -> streaming.StreamHarvest:
    """Rank `rank` of 2 (torch.distributed's view, as torchrun gives it), with 2 real DataLoader workers."""
    monkeypatch.setattr(distributed, "current_group", lambda: Ranks(rank, 2))
    run = streaming.StreamHarvest(harvester, stream, batch_size=3, num_workers=2)
    run.acts = {}
    for ids, acts in run:
        for i, key in enumerate(ids):
            run.acts[key] = acts[HOOK][i]
    return run


def check_exactly_once(runs, images, model, key_of=lambda k: k):
    seen = [key_of(k) for run in runs for k in run.ids]
    assert sorted(seen) == sorted(images)  # no duplicate, no gap
    assert sum(run.skipped for run in runs) == 1  # the truncated png, counted, not a crash
    assert all(run.seen > 0 for run in runs)  # both ranks did work
    # the activations are those of the same images decoded from their bytes and run through the model
    harvester = ActivationHarvester(model, [HOOK], "all")
    keys = sorted(images)
    pixels = torch.stack([model.preprocess(Image.open(io.BytesIO(images[k])).convert("RGB")) for k in keys])
    want = harvester.activations(pixels)[HOOK]
    got = {key_of(k): a for run in runs for k, a in run.acts.items()}
    torch.testing.assert_close(torch.stack([got[k] for k in keys]), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reader", ["webdataset", "stdlib"])
def test_webdataset_shards_split_over_ranks_and_workers(model, tmp_path, monkeypatch, reader):
    if reader == "webdataset":
        pytest.importorskip("webdataset")
    else:
        monkeypatch.setattr(streaming, "_tar_samples", streaming._stdlib_tar_samples)
    images = write_tars(tmp_path / "tars")
    stream = streaming.WebDatasetImages(str(tmp_path / "tars" / "shard-{00000..00003}.tar"))
    stream.with_transform(model.preprocess)
    harvester = ActivationHarvester(model, [HOOK], "all")
    runs = [harvest_as_rank(monkeypatch, stream, harvester, rank) for rank in (0, 1)]
    check_exactly_once(runs, images, model)


def test_hf_streaming_split_over_ranks_and_workers(model, tmp_path, monkeypatch):
    """`hf:<name>` streamed: load_dataset is pointed at the local tars (datasets' own webdataset reader)."""
    import datasets

    images = write_tars(tmp_path / "tars")
    real = datasets.load_dataset
    files = sorted(str(p) for p in (tmp_path / "tars").glob("*.tar"))

    def local(name, split, streaming):
        assert streaming is True and name == "org/laion-mini"
        return real("webdataset", data_files={split: files}, split=split, streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", local)
    stream = streaming.stream_source("hf:org/laion-mini").with_transform(model.preprocess)
    assert stream.stream.num_shards == N_TARS
    harvester = ActivationHarvester(model, [HOOK], "all")
    runs = [harvest_as_rank(monkeypatch, stream, harvester, rank) for rank in (0, 1)]
    # datasets' webdataset reader keys samples by their name inside the tar; the tar is in __url__
    by_key = {k.split("/")[1]: k for k in images}
    check_exactly_once(runs, images, model, key_of=lambda k: by_key.get(k, k))


def test_a_truncated_shard_keeps_what_it_read_and_the_run_goes_on(tmp_path):
    """A tar cut off mid-way (an interrupted download): its samples before the cut are read, the rest is one
    skipped entry with a warning naming the shard, and the next shards are read in full."""
    write_tars(tmp_path / "tars")
    first = tmp_path / "tars" / "shard-00000.tar"
    first.write_bytes(first.read_bytes()[: 3 * 1024 + 700])  # the tar breaks off inside its second sample
    stream = streaming.WebDatasetImages(str(tmp_path / "tars")).with_transform(
        lambda image: torch.zeros(3, 2, 2)
    )
    with pytest.warns(UserWarning, match=r"shard-00000\.tar is unreadable after \d+ samples"):
        read = list(stream.samples(0, 1))
    keys = [key for key, _, _ in read]
    broken = [n for n, key in enumerate(keys) if "<unreadable" in key]
    assert len(broken) == 1 and keys[broken[0]].startswith("shard-00000.tar/") and read[broken[0]][1] is None
    assert (
        keys[: broken[0]] == [f"shard-00000.tar/s00000_{i:04d}" for i in range(broken[0])] and broken[0] < 2
    )
    assert keys[broken[0] + 1 :] == [f"shard-{t:05d}.tar/s{t:05d}_{i:04d}" for t in range(1, N_TARS)
                                     for i in range(PER_TAR)]  # fmt: skip
    assert read[broken[0]][2] == (1, 0)  # the position moves on to the next shard (what a resume starts from)


@pytest.mark.parametrize("reader", ["webdataset", "stdlib"])
def test_shards_written_by_webdatasets_own_shardwriter_read_as_webdataset_reads_them(
    tmp_path, monkeypatch, reader
):
    """The format's producer: shards written by the webdataset package's ShardWriter (PIL images encoded by its
    own encoders as jpg / png, a caption, several shards by maxcount) are read, every sample once in order, with
    the pixels webdataset's own reader decodes (WebDataset(...).decode("pil"))."""
    wds = pytest.importorskip("webdataset")
    if reader == "stdlib":
        monkeypatch.setattr(streaming, "_tar_samples", streaming._stdlib_tar_samples)
    rng = np.random.default_rng(3)
    pattern = str(tmp_path / "part-%05d.tar")
    with wds.ShardWriter(pattern, maxcount=4) as sink:
        for i in range(10):
            image = Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
            sink.write({"__key__": f"sample{i:03d}", "jpg" if i % 2 else "png": image, "txt": f"caption {i}"})
    shards = sorted(str(p) for p in tmp_path.glob("part-*.tar"))
    assert len(shards) == 3

    def as_array(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy())

    reference = {}
    for sample in wds.WebDataset(shards, shardshuffle=False).decode("pil"):
        shard = Path(sample["__url__"]).name
        reference[f"{shard}/{sample['__key__']}"] = as_array(sample.get("jpg") or sample.get("png"))
    assert len(reference) == 10
    stream = streaming.WebDatasetImages(str(tmp_path / "part-*.tar")).with_transform(as_array)
    read = [(key, pixels) for key, pixels, _ in stream.samples(0, 1)]
    assert [key for key, _ in read] == list(reference)  # every sample once, in the shards' order
    for key, pixels in read:
        torch.testing.assert_close(pixels, reference[key], rtol=0, atol=0)
