"""torchrun, 2 ranks, gloo on CPU, the toy model: the cache equals one process's byte for byte (also after a
killed rank and a resume), and two hooks trained on two ranks equal each hook trained alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sae_clip_plugin.cli import main as cli_main
from sae_clip_plugin.training import ActivationDiskCache
from sae_clip_plugin.training.cache import RANKS_DONE

ROOT = Path(__file__).resolve().parents[2]
HOOKS = "blocks.1.hook_resid_post,blocks.3.hook_resid_post"
BASE = [
    "--model", "toy", "--images", "toy", "--max-images", "128", "--set", "cache_shard_images=16",
    "--harvest-batch-size", "16", "--num-workers", "0", "--device", "cpu",
]  # fmt: skip
HARVEST = [*BASE, "--hook", HOOKS]
# a tiny training run: 4 steps of 512 tokens per hook
TRAIN = [
    *BASE, "--training-tokens", "2048", "--train-batch-size-tokens", "512", "--expansion-factor", "2",
    "--n-eval", "16", "--lr-warm-up-steps", "1", "--set", "prefetch_batches=0",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


def torchrun(
    tmp_path: Path, argv: list[str], kill_rank1_after: int | None = None
) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 sae-clip ARGV`; rank 1 SIGKILLs itself after its Nth finished shard if asked."""
    script = tmp_path / "rank.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        kill_after = {kill_rank1_after!r}
        if kill_after is not None and os.environ["RANK"] == "1":
            from sae_clip_plugin.training import cache
            real, done = cache.mark_done, []
            def killing(path, shard):
                real(path, shard)
                done.append(shard)
                if len(done) == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            cache.mark_done = killing
        from sae_clip_plugin.cli import main
        sys.exit(main(sys.argv[1:]))
        """)
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run(
        [*command, str(script), *argv], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


def files(path: Path) -> dict[str, bytes]:
    """Every file of a cache folder by relative path (the lock excepted: it is gone after a finished write)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_process_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("single") / "cache"
    assert cli_main(["harvest", *HARVEST, "--cache-path", str(path)]) == 0
    return path


def test_two_ranks_write_the_one_process_cache_byte_for_byte(one_process_cache, tmp_path):
    result = torchrun(tmp_path, ["harvest", *HARVEST, "--cache-path", str(tmp_path / "c")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "harvest plan:" in result.stderr and "free" in result.stderr  # printed once, before any work
    got, want = files(tmp_path / "c"), files(one_process_cache)
    assert sorted(got) == sorted(want)
    assert len([n for n in want if n.endswith(".arrow")]) == 16  # 8 shards x 2 hooks
    assert [n for n in got if got[n] != want[n]] == []


def test_a_killed_rank_is_resumed_to_the_same_cache(one_process_cache, tmp_path):
    path = tmp_path / "c"
    killed = torchrun(tmp_path, ["harvest", *HARVEST, "--cache-path", str(path)], kill_rank1_after=2)
    assert killed.returncode != 0
    noted = {p.name for p in (path / RANKS_DONE).iterdir()} if (path / RANKS_DONE).is_dir() else set()
    assert len(noted) >= 2  # rank 1's two finished shards, at least, survive it
    assert not ActivationDiskCache(path).complete
    # the resume (one process here; any number works) folds in what the ranks finished and does the rest
    assert cli_main(["harvest", *HARVEST, "--cache-path", str(path)]) == 0
    assert files(path) == files(one_process_cache)


def test_two_hooks_on_two_ranks_equal_each_hook_trained_alone(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ranks"
    result = torchrun(
        tmp_path, ["train", *TRAIN, "--hook", HOOKS, "--cache-path", str(tmp_path / "c"), "--out", str(out)]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for hook in HOOKS.split(","):
        alone = tmp_path / "alone" / hook
        # the independent reference: this hook alone, one process, harvested live (no cache)
        assert cli_main(["train", *TRAIN, "--hook", hook, "--out", str(alone)]) == 0
        got = load_file(out / hook / "sae_weights.safetensors")
        want = load_file(alone / "sae_weights.safetensors")
        assert sorted(got) == sorted(want)
        for name in want:
            assert torch.equal(got[name], want[name]), (hook, name)
        shutil.rmtree(alone)
