"""The output folder: checked before training, locked while training, saved so that no run is lost or mixed."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file

from sae_clip_plugin.locking import LOCK_NAME, FolderLockedError
from sae_clip_plugin.pretrained import load_sae, load_saes
from sae_clip_plugin.training import VisionSAETrainingRunner
from sae_clip_plugin.training import output as output_module
from sae_clip_plugin.training import runner as runner_module
from tests.training.test_training_runner import config


def _runner(tmp_path, model, pixels, **overrides) -> VisionSAETrainingRunner:
    return VisionSAETrainingRunner(
        config(tmp_path, **overrides), override_model=model, override_source=pixels
    )


def _no_training(monkeypatch) -> list[str]:
    """Record whether training started (a check that comes first never gets here)."""
    started: list[str] = []
    monkeypatch.setattr(VisionSAETrainingRunner, "_prepare_data", lambda self: started.append("data"))
    return started


def test_an_existing_file_as_output_is_refused_before_training(model, pixels, tmp_path, monkeypatch):
    started = _no_training(monkeypatch)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(
        NotADirectoryError, match=r"taken is a file, not a folder; choose another output_path"
    ):
        _runner(tmp_path, model, pixels, output_path=str(tmp_path / "taken")).run()
    assert not started


def test_an_unwritable_output_is_refused_before_training(model, pixels, tmp_path, monkeypatch):
    started = _no_training(monkeypatch)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(output_module.tempfile, "mkstemp", read_only)
    with pytest.raises(
        OSError, match=r"cannot write into .*out \(Read-only file system\); choose a writable"
    ):
        _runner(tmp_path, model, pixels).run()
    assert not started


def test_a_failed_final_save_keeps_the_trained_weights_and_says_where(model, pixels, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner_module, "replace_files", full_disk)
    runner = _runner(tmp_path, model, pixels)
    with pytest.raises(
        OSError, match=r"No space left on device.*the trained weights were saved to (\S+) "
    ) as info:
        runner.run()
    rescued = next((tmp_path / "ckpt").glob("rescued-*"))
    assert str(rescued) in str(info.value)
    saved = load_file(str(rescued / "sae_weights.safetensors"))
    trained = next(iter(runner.saes.values())).state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(value, trained[key].cpu(), rtol=0, atol=0)
    assert json.loads((rescued / "cfg.json").read_text())["d_sae"] == saved["W_dec"].shape[0]


def test_a_second_run_on_a_locked_output_is_refused(model, pixels, tmp_path, monkeypatch):
    """Both runs used to print "saved to"; one of them was silently gone."""
    started = _no_training(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    holder = {"pid": os.getppid(), "host": __import__("socket").gethostname(), "started": "now"}
    (out / LOCK_NAME).write_text(json.dumps(holder))  # a live process (our parent) holds it
    with pytest.raises(
        FolderLockedError, match=rf"SAE output folder at .*out is being written by process {os.getppid()}"
    ):
        _runner(tmp_path, model, pixels).run()
    assert not started


def test_a_killed_saves_temporary_folder_is_never_an_sae_and_is_cleared(model, pixels, tmp_path):
    first = _runner(tmp_path, model, pixels)
    first.run()
    out = tmp_path / "out"
    leftover = out / ".tmp-save-killed"
    leftover.mkdir()
    for name in ("cfg.json", "sae_weights.safetensors"):
        (leftover / name).write_bytes((out / name).read_bytes())
    assert [where for where, _ in load_saes(out)] == [str(out)]  # the hidden leftover is not a second SAE
    _runner(tmp_path, model, pixels, overwrite_output=True).run()
    assert not leftover.exists()


def test_a_kill_between_renames_leaves_a_folder_that_does_not_load(model, pixels, tmp_path, monkeypatch):
    """The save moves cfg.json last (and removes the old one first): never seed 2's config with seed 1's weights."""
    _runner(tmp_path, model, pixels, seed=1).run()
    out = tmp_path / "out"
    real_replace = os.replace
    moved: list[str] = []

    def killed_after_weights(src, dst):
        if os.path.basename(str(dst)) == "cfg.json":
            raise KeyboardInterrupt  # the kill, just before the last rename
        moved.append(os.path.basename(str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_weights)
    with pytest.raises(KeyboardInterrupt):
        _runner(tmp_path, model, pixels, seed=2, overwrite_output=True).run()
    monkeypatch.setattr(os, "replace", real_replace)
    assert "sae_weights.safetensors" in moved and not (out / "cfg.json").exists()
    with pytest.raises(FileNotFoundError, match="no SAE folders"):
        load_sae(out)


def test_one_hook_then_two_hooks_into_the_same_folder_is_refused(model, pixels, tmp_path, monkeypatch):
    _runner(tmp_path, model, pixels).run()
    started = _no_training(monkeypatch)
    with pytest.raises(FileExistsError, match="holds a single-hook SAE"):
        _runner(
            tmp_path, model, pixels, hook_name=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
            overwrite_output=True,
        ).run()  # fmt: skip
    assert not started
    assert SAE.load_from_disk(tmp_path / "out").cfg.d_in == 64


def test_resuming_from_an_older_checkpoint_never_overwrites_later_ones(model, pixels, tmp_path):
    _runner(tmp_path, model, pixels, checkpoint_every_tokens=128 * 10).run()
    checkpoints = sorted((p for p in (tmp_path / "ckpt").iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert len(checkpoints) >= 2
    before = {p.name: (p / "provider_state.json").read_bytes() for p in checkpoints}
    with pytest.raises(
        FileExistsError, match=rf"resuming from {checkpoints[0].name} would overwrite the later"
    ):
        _runner(
            tmp_path, model, pixels, checkpoint_every_tokens=128 * 10, output_path=str(tmp_path / "out2"),
            resume_from_checkpoint=str(checkpoints[0]),
        ).run()  # fmt: skip
    assert {p.name: (p / "provider_state.json").read_bytes() for p in checkpoints} == before
