"""The disk cache: exact contents, sae_lens reads it, interrupted writes resume exactly, mismatches refuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from sae_lens import ActivationsStore

from sae_clip_plugin.training import (
    ActivationDiskCache,
    CacheMismatchError,
    TensorSource,
    write_activation_cache,
)
from sae_clip_plugin.training import cache as cache_module
from tests.training.conftest import tiny_model

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
ROOT = Path(__file__).resolve().parents[2]


def write(path, model, pixels, **kwargs):
    kwargs = {"shard_images": 8, "batch_size": 5, "progress": False, **kwargs}
    return write_activation_cache(
        path, model, TensorSource(pixels), HOOKS, kwargs.pop("selection", "all"), **kwargs
    )


def reference(model, pixels, hook):
    _, cache = model.run_with_cache(pixels, names_filter=[hook])
    acts = cache[hook]
    return acts.reshape(acts.shape[0], acts.shape[1], -1)


def snapshot(path: Path) -> dict[str, bytes]:
    """Everything a reader sees: the datasets' rows per hook, the image list, the manifest minus bookkeeping."""
    cache = ActivationDiskCache(path)
    out = {"images": (path / "images.txt").read_bytes()}
    for hook in cache.hook_names:
        ds = datasets.load_from_disk(str(path / hook)).with_format("numpy")
        out[hook] = np.ascontiguousarray(ds[:][hook]).tobytes()
        out[hook + "/features"] = json.dumps(ds.features.to_dict(), sort_keys=True).encode()
    manifest = dict(cache.manifest)
    out["manifest"] = json.dumps(manifest, sort_keys=True).encode()
    return out


@pytest.mark.parametrize(("storage", "atol"), [("float32", 0.0), ("float16", 2e-3), ("bfloat16", 2e-2)])
def test_cache_holds_the_selected_activations(model, pixels, tmp_path, storage, atol):
    cache = write(tmp_path / "c", model, pixels[:20], selection="patches", storage_dtype=storage)
    assert cache.complete and cache.n_images == 20 and cache.context_size == 16
    assert cache.image_ids()[:2] == [
        f"{TensorSource(pixels[:20]).name}[0]",
        f"{TensorSource(pixels[:20]).name}[1]",
    ]
    for hook in HOOKS:
        expected = reference(model, pixels[:20], hook)[:, 1:]
        got = cache.read(hook, 0, 20)
        assert got.dtype == torch.float32 and got.shape == (20, 16, 64)
        cast = expected.to(getattr(torch, storage)).float()  # what rounding to the storage type gives
        torch.testing.assert_close(got, cast, rtol=0, atol=1e-5)
        assert float((got - expected).abs().max()) <= atol + 1e-5
        torch.testing.assert_close(cache.read(hook, 3, 11), got[3:11])


def test_layout_is_sae_lens_cached_activations(model, pixels, tmp_path):
    cache = write(tmp_path / "c", model, pixels[:20], storage_dtype="float16")
    hook = HOOKS[0]
    ds = datasets.load_from_disk(str(tmp_path / "c" / hook))
    assert ds.column_names == [hook] and len(ds) == 20
    assert isinstance(ds.features[hook], datasets.Array2D) and ds.features[hook].shape == (17, 64)
    store = ActivationsStore(
        model=None,
        dataset=None,
        streaming=False,
        hook_name=hook,
        hook_head_index=None,
        context_size=17,
        d_in=64,
        n_batches_in_buffer=4,
        total_training_tokens=340,
        store_batch_size_prompts=4,
        train_batch_size_tokens=17,
        prepend_bos=False,
        normalize_activations="none",
        device=torch.device("cpu"),
        dtype="float32",
        cached_activations_path=str(tmp_path / "c" / hook),
    )
    acts, token_ids = store.get_raw_llm_batch()
    assert token_ids is None
    torch.testing.assert_close(acts, cache.read(hook, 0, 4).reshape(-1, 64))
    assert next(store).shape == (17, 64)
    helper = cache.activations_store(HOOKS[1], train_batch_size_tokens=34, store_batch_size_prompts=2)
    torch.testing.assert_close(helper.get_raw_llm_batch()[0], cache.read(HOOKS[1], 0, 2).reshape(-1, 64))


def test_bfloat16_cache_is_refused_by_sae_lens_loudly(model, pixels, tmp_path):
    cache = write(tmp_path / "c", model, pixels[:8], storage_dtype="bfloat16")
    with pytest.raises(ValueError, match="bfloat16"):
        cache.activations_store(HOOKS[0])
    with pytest.raises(
        ValueError, match="not in the dataset"
    ):  # sae_lens itself: no column named after the hook
        ActivationsStore(
            model=None,
            dataset=None,
            streaming=False,
            hook_name=HOOKS[0],
            hook_head_index=None,
            context_size=17,
            d_in=64,
            n_batches_in_buffer=2,
            total_training_tokens=10,
            store_batch_size_prompts=2,
            train_batch_size_tokens=17,
            prepend_bos=False,
            normalize_activations="none",
            device=torch.device("cpu"),
            dtype="float32",
            cached_activations_path=str(tmp_path / "c" / HOOKS[0]),
        )


class Boom(RuntimeError):
    pass


def test_writer_interrupted_between_shards_resumes_exactly(model, pixels, tmp_path):
    full = write(tmp_path / "full", model, pixels[:37])

    def stop_after_two(shard):
        if shard == 1:
            raise Boom

    with pytest.raises(Boom):
        write(tmp_path / "part", model, pixels[:37], on_shard=stop_after_two)
    partial = ActivationDiskCache(tmp_path / "part")
    assert partial.completed_shards == [0, 1] and not partial.complete and partial.n_images == 16
    assert len(datasets.load_from_disk(str(tmp_path / "part" / HOOKS[0]))) == 16  # readable meanwhile
    seen = []
    resumed = write(tmp_path / "part", model, pixels[:37], on_shard=seen.append)
    assert seen == [2, 3, 4]  # only the missing shards were computed
    assert resumed.complete and snapshot(tmp_path / "part") == snapshot(tmp_path / "full")
    assert full.n_images == 37


def test_writer_interrupted_inside_a_shard_resumes_exactly(model, pixels, tmp_path, monkeypatch):
    write(tmp_path / "full", model, pixels[:30])
    real, calls = cache_module._write_arrow, []

    def flaky(dataset, target):
        calls.append(target.name)
        if len(calls) == 6:  # shard 2: the first hook's file is in place, the second hook's is not
            raise Boom
        real(dataset, target)

    monkeypatch.setattr(cache_module, "_write_arrow", flaky)
    with pytest.raises(Boom):
        write(tmp_path / "part", model, pixels[:30])
    monkeypatch.setattr(cache_module, "_write_arrow", real)
    assert ActivationDiskCache(tmp_path / "part").completed_shards == [0, 1]
    assert (tmp_path / "part" / HOOKS[0] / "data-00002.arrow").exists()  # orphan, not listed in state.json
    assert len(datasets.load_from_disk(str(tmp_path / "part" / HOOKS[0]))) == 16
    write(tmp_path / "part", model, pixels[:30])
    assert snapshot(tmp_path / "part") == snapshot(tmp_path / "full")


@pytest.mark.skipif(
    not os.environ.get("SAE_CLIP_SLOW_TESTS"),
    reason="spawns a fresh interpreter (~20 s of imports on a loaded machine); set SAE_CLIP_SLOW_TESTS=1 to run",
)
def test_writer_killed_by_sigkill_resumes_exactly(pixels, tmp_path):
    """A real kill (no cleanup runs) in a child process, then a resume in this one."""
    torch.save(pixels[:30], tmp_path / "pixels.pt")
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        torch.set_num_threads(1)
        from tests.training.conftest import tiny_model
        from sae_clip_plugin.training import TensorSource, write_activation_cache
        from sae_clip_plugin.training import cache as cache_module
        real, calls = cache_module._write_arrow, []
        def killing(dataset, target):
            calls.append(1)
            if len(calls) == 6:
                os.kill(os.getpid(), signal.SIGKILL)
            real(dataset, target)
        cache_module._write_arrow = killing
        write_activation_cache({str(tmp_path / "part")!r}, tiny_model(), TensorSource(torch.load({str(tmp_path / "pixels.pt")!r})),
                               {HOOKS!r}, "all", shard_images=8, batch_size=5, progress=False)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    model = tiny_model()
    assert ActivationDiskCache(tmp_path / "part").completed_shards == [0, 1]
    write(tmp_path / "part", model, pixels[:30])
    write(tmp_path / "full", model, pixels[:30])
    assert snapshot(tmp_path / "part") == snapshot(tmp_path / "full")


def test_cache_refuses_another_configuration(model, pixels, tmp_path):
    write(tmp_path / "c", model, pixels[:16])
    with pytest.raises(CacheMismatchError, match="token_selection"):
        write(tmp_path / "c", model, pixels[:16], selection="cls")
    with pytest.raises(CacheMismatchError, match="images_sha256"):
        write(tmp_path / "c", model, pixels[1:17])
    with pytest.raises(CacheMismatchError, match="model_fingerprint"):
        write(tmp_path / "c", tiny_model(seed=7), pixels[:16])
    with pytest.raises(CacheMismatchError, match="storage_dtype"):
        write(tmp_path / "c", model, pixels[:16], storage_dtype="float16")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an activation cache"):
        write(tmp_path / "other", model, pixels[:16])


def _killed_writer(path: Path, model, pixels, kill_at: int, at_rename: bool) -> None:
    """Fork; the child writes the cache and SIGKILLs itself (no cleanup runs) at the kill_at-th shard-file write,
    either before it starts or between its temp folder being complete and the rename into place."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            calls = []
            if at_rename:
                real_replace = os.replace

                def killing_replace(src, dst):
                    if str(dst).endswith(".arrow"):
                        calls.append(1)
                        if len(calls) == kill_at:
                            os.kill(os.getpid(), signal.SIGKILL)
                    real_replace(src, dst)

                cache_module.os.replace = killing_replace
            else:
                real_write = cache_module._write_arrow

                def killing_write(dataset, target):
                    calls.append(1)
                    if len(calls) == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    real_write(dataset, target)

                cache_module._write_arrow = killing_write
            write(path, model, pixels)
        finally:
            os._exit(3)  # only reached when the kill point lies beyond the last write
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_random_points_and_at_a_rename_resumes_byte_for_byte(model, pixels, tmp_path):
    """Fault injection: kill -9 the writer (several seeded points, and inside a temp-folder rename), resume."""
    full = tmp_path / "full"
    write(full, model, pixels[:30])  # 4 shards x 2 hooks = 8 shard files
    rng = np.random.default_rng(0)
    points = [(int(k), False) for k in rng.choice(np.arange(1, 9), size=3, replace=False)] + [
        (3, True),
        (6, True),
    ]
    for i, (kill_at, at_rename) in enumerate(points):
        part = tmp_path / f"part{i}"
        _killed_writer(part, model, pixels[:30], kill_at, at_rename)
        if at_rename:  # the killed writer's debris: a complete temp folder that was never renamed
            assert list(part.rglob(".tmp-*"))
        assert (part / ".lock").exists()  # left by the dead writer: taken over, not blocking
        write(part, model, pixels[:30])
        assert snapshot(part) == snapshot(full), (kill_at, at_rename)
        for arrow in sorted(full.rglob("*.arrow")):
            assert (part / arrow.relative_to(full)).read_bytes() == arrow.read_bytes()
        assert not list(part.rglob(".tmp-*")) and not (part / ".lock").exists()


def test_a_second_live_writer_is_refused_with_its_holder_named(model, pixels, tmp_path):
    import socket

    from sae_clip_plugin.locking import FolderLockedError, folder_lock

    path = tmp_path / "c"
    with folder_lock(path, "activation cache"):
        # another process holds it: pretend by writing our parent's pid (alive) into the lock
        (path / ".lock").write_text(
            json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "x"})
        )
        with pytest.raises(FolderLockedError, match=rf"being written by process {os.getppid()} on"):
            write(path, model, pixels[:8])
        (path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
        with pytest.raises(FolderLockedError, match="on another machine, elsewhere"):
            write(path, model, pixels[:8])
        (path / ".lock").unlink()
    assert write(path, model, pixels[:8]).complete
