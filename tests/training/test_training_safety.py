"""Nothing deleted that the project did not write, nothing non-finite saved, every bad config value named."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from sae_clip_plugin.training import VisionSAERunnerConfig, VisionSAETrainingRunner
from sae_clip_plugin.training.harvest import NonFiniteActivationsError
from sae_clip_plugin.training.runner import NonFiniteTrainingError
from tests.training.conftest import write_images
from tests.training.test_training_runner import config


def test_nested_cache_checkpoints_and_user_files_survive_the_final_save(model, pixels, tmp_path):
    out = tmp_path / "out1"
    cfg = config(
        tmp_path,
        output_path=str(out),
        cached_activations_path=str(out / "cache"),
        checkpoint_path=str(out / "ckpt"),
        n_checkpoints=2,
    )
    VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels).run()
    assert (out / "cache" / "manifest.json").is_file() or any((out / "cache").iterdir())
    checkpoints = sorted(p.name for p in (out / "ckpt").iterdir() if p.is_dir())
    assert len(checkpoints) == 2
    assert SAE.load_from_disk(out).cfg.d_in == 64

    # overwrite replaces the SAE's own files only: a note the user keeps there survives, so do cache + checkpoints
    (out / "my_notes.txt").write_text("keep me")
    before = (out / "sae_weights.safetensors").read_bytes()
    again = config(
        tmp_path,
        output_path=str(out),
        cached_activations_path=str(out / "cache"),
        checkpoint_path=str(tmp_path / "other_ckpt"),
        overwrite_output=True,
        seed=7,
    )
    VisionSAETrainingRunner(again, override_model=model, override_source=pixels).run()
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "ckpt").iterdir() if p.is_dir()) == checkpoints
    assert (out / "sae_weights.safetensors").read_bytes() != before  # really replaced
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_an_existing_sae_is_not_replaced_without_overwrite(model, pixels, tmp_path):
    VisionSAETrainingRunner(config(tmp_path), override_model=model, override_source=pixels).run()
    with pytest.raises(FileExistsError, match=r"already holds a saved SAE.*overwrite_output"):
        VisionSAETrainingRunner(
            config(tmp_path, checkpoint_path=None), override_model=model, override_source=pixels
        ).run()


def test_string_false_is_not_taken_as_true(model, pixels, tmp_path):
    with pytest.raises(TypeError, match=r"overwrite_output must be true or false, got 'false'"):
        config(tmp_path, overwrite_output="false")


def test_rerun_after_a_kill_refuses_to_overwrite_checkpoints_and_resumes_when_asked(model, pixels, tmp_path):
    cfg = config(tmp_path, checkpoint_every_tokens=1024)
    VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels).run()
    ckpt = tmp_path / "ckpt"
    stamps = {
        p.name: (p / "sae_weights.safetensors").stat().st_mtime_ns for p in ckpt.iterdir() if p.is_dir()
    }
    assert stamps
    shutil.rmtree(tmp_path / "out")  # as if killed before the final save
    with pytest.raises(FileExistsError, match="resume-from-checkpoint latest"):
        VisionSAETrainingRunner(
            config(tmp_path, checkpoint_every_tokens=1024), override_model=model, override_source=pixels
        ).run()
    assert {
        p.name: (p / "sae_weights.safetensors").stat().st_mtime_ns for p in ckpt.iterdir() if p.is_dir()
    } == (stamps)
    resumed = VisionSAETrainingRunner(
        config(tmp_path, checkpoint_every_tokens=1024, resume_from_checkpoint="latest"),
        override_model=model,
        override_source=pixels,
    )
    resumed.run()
    assert resumed.cfg.resume_from_checkpoint == str(ckpt / max(stamps, key=int))
    assert (tmp_path / "out" / "sae_weights.safetensors").is_file()


def test_a_nan_pixel_is_named_and_nothing_is_saved(model, pixels, tmp_path):
    bad = pixels.clone()
    bad[5, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteActivationsError, match=r"index 5\) gives non-finite activations"):
        VisionSAETrainingRunner(config(tmp_path), override_model=model, override_source=bad).run()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_nan_image_file_is_named(model, tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    write_images(folder, 6, size=32)
    Image.fromarray(np.full((32, 32), np.nan, dtype=np.float32), "F").save(folder / "img_999.tiff")
    with pytest.raises(Exception, match=r"img_999\.tiff.*NaN or inf pixel values"):
        VisionSAETrainingRunner(config(tmp_path, dataset_path=str(folder)), override_model=model).run()


def test_a_diverging_loss_stops_training_and_saves_nothing(model, pixels, tmp_path):
    runner = VisionSAETrainingRunner(config(tmp_path), override_model=model, override_source=pixels)
    runner.setup()
    runner._prepare_data()
    runner._build_trainer(runner.provider)
    runner._guard_steps()
    trainer = runner.trainer
    original = trainer._train_step

    def poisoned(sae, sae_in):
        out = original(sae, sae_in)
        out.loss = out.loss * float("inf")
        return out

    trainer._train_step = poisoned
    with pytest.raises(NonFiniteTrainingError, match=r"training loss .* became"):
        trainer.fit()


def test_non_finite_weights_are_never_saved(model, pixels, tmp_path):
    runner = VisionSAETrainingRunner(config(tmp_path), override_model=model, override_source=pixels)
    runner.setup()
    runner._prepare_data()
    runner._build_trainer(runner.provider)
    with torch.no_grad():
        next(iter(runner.saes.values())).W_dec[0, 0] = float("nan")
    with pytest.raises(NonFiniteTrainingError, match="non-finite weights \\(W_dec\\)"):
        runner._save_outputs()
    assert not (tmp_path / "out" / "sae_weights.safetensors").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, r"lr must be in \(0"),
        ("lr", float("nan"), "lr must be a finite number"),
        ("adam_beta1", 2.0, r"adam_beta1 must be in \[0, 1\)"),
        ("expansion_factor", 2.5, "expansion_factor must be an integer, got 2.5"),
        ("d_sae", 0, r"d_sae must be in \[1"),
        ("seed", "abc", "seed must be an integer, got 'abc'"),
        ("training_tokens", "1e6", r"training_tokens must be an integer, got '1e6'.*write 1000000"),
        ("n_checkpoints", -1, r"n_checkpoints must be in \[0"),
        ("num_workers", -2, r"num_workers must be in \[0"),
        ("sae_dtype", "float16", "no float32 master copy"),
        ("model_dtype", "float13", "model_dtype must be one of"),
        ("sae", {"k": 64}, r"sae \(standard\) option\(s\) \['k'\] do not exist"),
        ("sae", {"l1_coefficient": "5"}, r"sae \(standard\).l1_coefficient must be a number, got '5'"),
        ("sae", {"apply_b_dec_to_input": "false"}, "set by the runner from apply_b_dec_to_input"),
        ("logger", {"log_to_wandb": "false"}, "logger.log_to_wandb must be true or false, got 'false'"),
        ("logger", {"wandb_log_frequency": "10"}, "logger.wandb_log_frequency must be an integer"),
        ("sae", {"l1_coefficient": -1.0}, r"sae.l1_coefficient must be in \[0"),
    ],
)
def test_bad_config_values_are_refused_with_the_field_named(tmp_path, field, value, message):
    with pytest.raises((TypeError, ValueError), match=message):
        config(tmp_path, **{field: value})


@pytest.mark.parametrize(
    ("sae", "message"),
    [
        ({"k": "64"}, r"sae \(topk\).k must be an integer, got '64'"),
        ({"k": 0}, r"sae.k \(active features per token\) must be in \[1"),
        (
            {"rescale_acts_by_decoder_norm": "false"},
            r"sae \(topk\).rescale_acts_by_decoder_norm must be true or false",
        ),
    ],
)
def test_nested_sae_options_are_checked_like_top_level_fields(tmp_path, sae, message):
    """A quoted "false" in a nested group used to reach sae_lens as a (true) string."""
    with pytest.raises((TypeError, ValueError), match=message):
        config(tmp_path, architecture="topk", sae=sae)


def test_nested_groups_from_a_yaml_file_are_checked(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text('hook_name: blocks.1.hook_resid_post\nlogger:\n  log_to_wandb: "false"\n')
    with pytest.raises(TypeError, match=r"logger\.log_to_wandb must be true or false"):
        VisionSAERunnerConfig.from_file(path)
    path.write_text("hook_name: blocks.1.hook_resid_post\nlogger:\n  log_to_wandb: false\n")
    assert VisionSAERunnerConfig.from_file(path).logger.log_to_wandb is False


def test_yaml_scientific_notation_is_named(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("hook_name: blocks.1.hook_resid_post\ntraining_tokens: 1e6\n")
    with pytest.raises(TypeError, match="training_tokens must be an integer, got '1e6'"):
        VisionSAERunnerConfig.from_file(path)
    path.write_text("hook_name: blocks.1.hook_resid_post\ntraining_tokens: 1.0e+6\n")
    assert VisionSAERunnerConfig.from_file(path).training_tokens == 1_000_000


def test_written_files_honour_the_umask(model, pixels, tmp_path):
    old = os.umask(0o022)
    try:
        VisionSAETrainingRunner(
            config(tmp_path, n_checkpoints=1), override_model=model, override_source=pixels
        ).run()
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    checkpoint_files = [p for p in (tmp_path / "ckpt").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in checkpoint_files)  # sae_lens' own files among them
    for path in checkpoint_files:  # they were 0600 whatever the umask
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_umask_is_honoured_by_atomic_writes(tmp_path):
    from sae_clip_plugin.atomic import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(Path(tmp_path / "a.txt").stat().st_mode) == 0o640


@pytest.mark.parametrize("use_cache", [False, True])
def test_two_seeded_runs_give_identical_weights(model, pixels, tmp_path, use_cache):
    """As the CLI runs it (setup() first, to check every input), from any global RNG state, with or without cache."""
    weights = []
    for i, noise_seed in enumerate((1, 2)):
        torch.manual_seed(noise_seed)  # whatever ran before in the process
        torch.rand(100 + i)
        cfg = config(
            tmp_path,
            output_path=str(tmp_path / f"out{i}"),
            checkpoint_path=None,
            cached_activations_path=str(tmp_path / "cache") if use_cache else None,
            num_workers=0,
            prefetch_batches=0,
        )
        runner = VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels)
        runner.setup()
        torch.rand(7)
        runner.run()
        weights.append(SAE.load_from_disk(tmp_path / f"out{i}").state_dict())
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def _terminate_at_draw(monkeypatch, n: int):
    """SIGTERM (as sae_lens raises it) when the trainer draws its n-th batch; returns the real __next__."""
    from sae_lens.training._interruption import InterruptedException

    from sae_clip_plugin.training.provider import ActivationProvider

    real_next, drawn = ActivationProvider.__next__, []

    def terminated_next(self):
        drawn.append(1)
        if len(drawn) == n:
            raise InterruptedException
        return real_next(self)

    monkeypatch.setattr(ActivationProvider, "__next__", terminated_next)
    return real_next


def test_sigterm_saves_a_checkpoint_and_the_cli_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """SIGTERM reaches training as sae_lens' InterruptedException: one line, a checkpoint, the resume flag, exit 143."""
    from sae_clip_plugin.cli import main
    from sae_clip_plugin.training.provider import ActivationProvider

    real_next = _terminate_at_draw(monkeypatch, 4)
    argv = ["train", "--model", "toy", "--images", "toy", "--max-images", "16", "--hook",
            "blocks.1.hook_resid_post", "--expansion-factor", "2", "--training-tokens", "4096",
            "--train-batch-size-tokens", "256", "--set", "lr_warm_up_steps=1", "--num-workers", "0",
            "--out", str(tmp_path / "out"), "--checkpoint-path", str(tmp_path / "ckpt"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 143
    err = capsys.readouterr().err
    assert "interrupted (SIGTERM) after 768 training tokens; checkpoint saved at" in err
    assert "--resume-from-checkpoint latest" in err and "Traceback" not in err
    assert (tmp_path / "ckpt" / "768" / "provider_state.json").is_file()
    monkeypatch.setattr(ActivationProvider, "__next__", real_next)
    assert main([*argv, "--resume-from-checkpoint", "latest"]) == 0
    assert SAE.load_from_disk(tmp_path / "out").cfg.d_sae == 256


def test_cli_errors_are_one_line_unless_debug(tmp_path, capsys):
    from sae_clip_plugin.cli import main

    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "cfg.json").write_text("{broken")
    (folder / "sae_weights.safetensors").write_bytes(b"")
    argv = ["steerability", "--sae", str(folder), "--model", "toy", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "cfg.json is not valid JSON" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    )
    with pytest.raises(ValueError, match="not valid JSON"):
        main(["--debug", *argv])


def test_the_training_bar_is_labelled_and_ends_at_100_percent(model, pixels, tmp_path, capsys):
    """37 steps (not a multiple of sae_lens' 100-step bar updates): the bar still ends at 100%, steps named."""
    cfg = config(tmp_path, training_tokens=128 * 37, checkpoint_path=None)
    VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels).run()
    bars = [
        b for b in capsys.readouterr().err.replace("\r", "\n").splitlines() if b.startswith("training SAE")
    ]
    assert bars and "100%" in bars[-1] and "step 37 (loss " in bars[-1] and "4.74k/4.74k" in bars[-1]


def test_a_second_sigterm_while_the_checkpoint_is_written_does_not_break_it(
    model, pixels, tmp_path, monkeypatch
):
    """Schedulers send SIGTERM again after a grace period: the checkpoint being written must still complete."""
    import signal as signals

    from sae_clip_plugin.training.runner import TrainingInterrupted

    _terminate_at_draw(monkeypatch, 4)
    runner = VisionSAETrainingRunner(config(tmp_path), override_model=model, override_source=pixels)
    runner.setup()
    real_save = None

    def save_with_a_second_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signals.SIGTERM)  # the second one, mid-save
        return real_save(*args, **kwargs)

    original_build = runner._build_trainer

    def build_and_patch(provider):
        nonlocal real_save
        original_build(provider)
        real_save = runner.trainer.save_checkpoint
        runner.trainer.save_checkpoint = save_with_a_second_sigterm

    runner._build_trainer = build_and_patch
    with pytest.raises(TrainingInterrupted, match=r"interrupted \(SIGTERM\).*checkpoint saved at"):
        runner.run()
    (saved,) = [p for p in (tmp_path / "ckpt").iterdir() if p.is_dir()]
    assert (saved / "provider_state.json").is_file()
    assert signals.getsignal(signals.SIGTERM) is not signals.SIG_IGN  # restored afterwards
