"""Exact resume: a run stopped (Ctrl-C, SIGTERM, kill -9) and resumed gives the uninterrupted run's SAE, bit for bit.

The mixing buffer is checked against sae_lens' own `mixing_buffer` / `multi_hook_concat_split_iter` (the reference
it re-implements with its state in the open), then whole runs are interrupted at seeded points and resumed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import SAE
from sae_lens.training.mixing_buffer import mixing_buffer, multi_hook_concat_split_iter
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import load_file

from sae_clip_plugin.training import VisionSAETrainingRunner
from sae_clip_plugin.training.checkpoints import PROVIDER_BUFFER_FILENAME, existing_checkpoints
from sae_clip_plugin.training.mixing import MixingBuffer, pack
from sae_clip_plugin.training.runner import TrainingInterrupted
from tests.training.test_training_runner import HOOK, config

HOOKS = ["blocks.0.hook_resid_post", HOOK]


def _pieces(seed: int, n: int = 23, d: int = 5) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 40, (n,), generator=generator).tolist()
    return [torch.randn(size, d, generator=generator) for size in sizes]


@pytest.mark.parametrize("mix_fraction", [0.0, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 7])
def test_mixing_buffer_gives_sae_lens_batches(mix_fraction, seed):
    """Same pieces, same seed: the same batches as sae_lens' generator drawing from the global RNG."""
    pieces = _pieces(seed)
    torch.manual_seed(seed)
    expected = list(mixing_buffer(64, 16, iter(pieces), mix_fraction))
    ours = list(MixingBuffer(64, 16, mix_fraction, seed=seed).batches(iter(pieces)))
    assert len(ours) == len(expected) > 10
    for a, b in zip(ours, expected, strict=True):
        assert torch.equal(a, b)


def test_packed_hooks_give_sae_lens_multi_hook_batches():
    widths = {"a": 3, "b": 2}
    generator = torch.Generator().manual_seed(3)
    pieces = [
        {h: torch.randn(n, d, generator=generator) for h, d in widths.items()} for n in (30, 9, 41, 17, 28)
    ]
    torch.manual_seed(3)
    expected = list(multi_hook_concat_split_iter(48, 16, iter(pieces), list(widths), 0.5))
    ours = list(MixingBuffer(48, 16, 0.5, seed=3).batches(pack(p, list(widths)) for p in pieces))
    assert len(ours) == len(expected) > 3
    for packed, batch in zip(ours, expected, strict=True):
        assert torch.equal(packed, torch.cat([batch["a"], batch["b"]], dim=1))


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_a_restored_buffer_continues_the_same_batches(stop_after):
    pieces = _pieces(1)
    full = list(MixingBuffer(64, 16, 0.5, seed=1).batches(iter(pieces)))
    first = MixingBuffer(64, 16, 0.5, seed=1)
    feed = iter(pieces)
    stream = first.batches(feed)
    head = [next(stream) for _ in range(stop_after)]
    state = first.snapshot()
    second = MixingBuffer(64, 16, 0.5, seed=99)  # the restored generator state wins over the seed
    second.restore(state)
    tail = list(second.batches(feed))  # the same source, continued
    assert len(head) + len(tail) == len(full)
    for a, b in zip(head + tail, full, strict=True):
        assert torch.equal(a, b)


def _weights(path: Path, hooks: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The saved SAE(s): weights and the feature sparsity sae_lens stores beside them (its windows follow the
    trainer's step count, so a resume that miscounts steps shows there)."""
    folders = [path / h for h in hooks] if hooks else [path]
    out = {}
    for folder in folders:
        out.update({f"{folder.name}/{k}": v for k, v in SAE.load_from_disk(folder).state_dict().items()})
        out[f"{folder.name}/sparsity"] = load_file(folder / "sparsity.safetensors")["sparsity"]
    return out


def _assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.equal(value, b[name]), (name, (value - b[name]).abs().max())


RUN = dict(
    token_selection="all",
    train_batch_size_tokens=64,
    training_tokens=64 * 40,
    n_batches_in_buffer=4,
    activations_mixing_fraction=0.5,
    cache_chunk_images=4,
    checkpoint_every_tokens=64 * 7,
    feature_sampling_window=6,  # sparsity windows end inside the run
    architecture="topk",
    sae={"k": 8},
)


def _run(tmp_path: Path, name: str, model, pixels, **overrides) -> VisionSAETrainingRunner:
    runner = VisionSAETrainingRunner(
        config(
            tmp_path,
            output_path=str(tmp_path / name / "out"),
            checkpoint_path=str(tmp_path / name / "ckpt"),
            **{**RUN, **overrides},
        ),
        override_model=model,
        override_source=pixels,
    )
    runner.run()
    return runner


def _signal_in_step(monkeypatch, n: int, signum: int) -> None:
    """Send a real signal to this process from inside the trainer's n-th step (as a user's Ctrl-C lands)."""
    real_step, calls = SAETrainer.step, []

    def step(self, batch):
        calls.append(1)
        out = real_step(self, batch)
        if len(calls) == n:
            os.kill(os.getpid(), signum)  # handled before step() returns: mid-step for the trainer
        return out

    monkeypatch.setattr(SAETrainer, "step", step)


@pytest.mark.parametrize(
    ("signum", "prefetch", "hooks", "steps"),
    [
        (signal.SIGINT, 0, HOOK, 11),
        (signal.SIGTERM, 2, HOOK, 15),  # a prefetching thread has drawn further than the trainer trained
        (signal.SIGINT, 0, HOOKS, 2 * 17),  # two SAEs: the step is called once per SAE
    ],
)
def test_interrupt_and_resume_equals_the_uninterrupted_run(
    model, pixels, tmp_path, monkeypatch, signum, prefetch, hooks, steps
):
    common = dict(prefetch_batches=prefetch, hook_name=hooks)
    _run(tmp_path, "whole", model, pixels, **common)
    _signal_in_step(monkeypatch, steps, signum)
    with pytest.raises(TrainingInterrupted) as info:
        _run(tmp_path, "cut", model, pixels, **common)
    assert "trains on the same batches as an uninterrupted one" in str(info.value)
    done = steps // (2 if isinstance(hooks, list) else 1) * 64  # taken after the step it landed in
    saved = existing_checkpoints(tmp_path / "cut" / "ckpt")[-1]
    assert saved.name == str(done) and (saved / PROVIDER_BUFFER_FILENAME).is_file()
    monkeypatch.undo()
    resumed = _run(tmp_path, "cut", model, pixels, resume_from_checkpoint="latest", **common)
    assert resumed.cfg.resume_from_checkpoint == str(saved)
    names = hooks if isinstance(hooks, list) else None
    _assert_bit_equal(_weights(tmp_path / "cut" / "out", names), _weights(tmp_path / "whole" / "out", names))


def _killed_run(tmp_path: Path, name: str, model, pixels, where: str, n: int, **overrides) -> None:
    """Fork; the child trains and SIGKILLs itself (no cleanup runs) at the n-th `where`: a training step (after
    the forward pass, before the optimiser), a batch drawn from the provider (the first 20 estimate the activation norm), or a checkpoint's buffer file."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            calls: list[int] = []

            def kill_at_n() -> None:
                calls.append(1)
                if len(calls) == n:
                    os.kill(os.getpid(), signal.SIGKILL)

            if where == "step":
                real_optimizer_step = torch.optim.Adam.step

                def step(self, *args, **kwargs):
                    kill_at_n()
                    return real_optimizer_step(self, *args, **kwargs)

                torch.optim.Adam.step = step
            elif where == "draw":
                from sae_clip_plugin.training.provider import ActivationProvider

                real_next = ActivationProvider.__next__

                def draw(self):
                    kill_at_n()
                    return real_next(self)

                ActivationProvider.__next__ = draw
            else:
                from safetensors import torch as safetensors_torch

                real_save = safetensors_torch.save_file

                def save(tensors, filename, *args, **kwargs):
                    if "mixing.generator_state" in tensors:
                        kill_at_n()
                    return real_save(tensors, filename, *args, **kwargs)

                safetensors_torch.save_file = save
                import sae_clip_plugin.training.checkpoints as checkpoints_module

                checkpoints_module.save_file = save
            _run(tmp_path, name, model, pixels, **overrides)
        finally:
            os._exit(3)  # only reached when the kill point lies beyond the run
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("cached", [False, True])
def test_kill_9_at_seeded_points_then_resume_latest_equals_the_uninterrupted_run(
    model, pixels, tmp_path, cached
):
    common = {"cached_activations_path": str(tmp_path / "cache")} if cached else {}
    _run(tmp_path, "whole", model, pixels, **common)
    whole = _weights(tmp_path / "whole" / "out")
    rng = np.random.default_rng(1 if cached else 0)
    points = [
        ("step", int(rng.integers(8, 39))),
        ("draw", int(rng.integers(28, 59))),
        ("checkpoint", int(rng.integers(1, 5))),
    ]
    for i, (where, n) in enumerate(points):
        name = f"killed{i}"
        _killed_run(tmp_path, name, model, pixels, where, n, **common)
        if not existing_checkpoints(
            tmp_path / name / "ckpt"
        ):  # killed before the first checkpoint: the same command starts over
            _run(tmp_path, name, model, pixels, **common)
        else:
            _run(tmp_path, name, model, pixels, resume_from_checkpoint="latest", **common)
        _assert_bit_equal(_weights(tmp_path / name / "out"), whole)
