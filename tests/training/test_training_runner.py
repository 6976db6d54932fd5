"""End to end: short runs give sae_lens folders that load back identically, with checkpoints and resume."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file

from sae_clip_plugin.cli.train import main as cli_main
from sae_clip_plugin.training import (
    TRAINING_ARCHITECTURES,
    CacheMismatchError,
    VisionSAERunnerConfig,
    VisionSAETrainingRunner,
)
from tests.training.conftest import TINY_SPEC

HOOK = "blocks.1.hook_resid_post"


def config(tmp_path: Path, **overrides) -> VisionSAERunnerConfig:
    base = dict(
        model_name=TINY_SPEC,
        dataset_path="unused",
        hook_name=HOOK,
        training_tokens=4096,
        train_batch_size_tokens=128,
        lr_warm_up_steps=2,
        lr=1e-3,
        expansion_factor=2,
        device="cpu",
        num_workers=0,
        n_eval_images=12,
        output_path=str(tmp_path / "out"),
        checkpoint_path=str(tmp_path / "ckpt"),
        prefetch_batches=0,
    )
    return VisionSAERunnerConfig(**{**base, **overrides})


def test_short_run_saves_a_folder_sae_lens_loads_identically(model, pixels, tmp_path):
    runner = VisionSAETrainingRunner(
        config(tmp_path, token_selection="patches"), override_model=model, override_source=pixels
    )
    trained = runner.run()
    out = tmp_path / "out"
    assert {
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
        "runner_cfg.json",
        "eval_log.json",
    } <= {p.name for p in out.iterdir()}
    loaded = SAE.load_from_disk(out)
    assert type(loaded).__name__ == "StandardSAE" and loaded.cfg.d_sae == 128
    x = runner.eval_acts[HOOK].reshape(-1, 64)
    trained.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained.decode(trained.encode(x)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded.encode(x), trained.encode(x), rtol=1e-5, atol=1e-5)
    meta = loaded.cfg.metadata
    expected = {
        "model_name": TINY_SPEC,
        "hook_name": HOOK,
        "token_selection": "patches",
        "context_size": 16,
        "prepend_bos": False,
        "image_size": 32,
        "patch_size": 8,
        "n_tokens": 17,
        "cls_token_index": 0,
        "weight_processing": {"fold_ln": False, "center_writing_weights": False},
    }
    assert {k: meta[k] for k in expected} == expected
    assert (
        meta["sae_lens_version"] and meta["preprocessing"]["size"] == 32 and meta["dataset"]["n_images"] == 40
    )
    assert list(meta["seqpos_slice"]) == [1, None]
    log = json.loads((out / "eval_log.json").read_text())
    final = log[-1]["metrics"][HOOK]
    assert log[-1]["kind"] == "final" and set(final) >= {
        "explained_variance",
        "l0",
        "l0_patches",
        "dead_fraction_eval",
    }
    assert 0 < final["explained_variance"] <= 1
    assert json.loads((out / "runner_cfg.json").read_text())["token_selection"] == "patches"
    assert meta["runner_config"]["token_selection"] == "patches"  # the config travels in the SAE's metadata


@pytest.mark.parametrize("architecture", TRAINING_ARCHITECTURES)
def test_every_sae_lens_architecture_trains_and_loads(model, pixels, tmp_path, architecture):
    sae = {"k": 8} if "topk" in architecture else {}
    cfg = config(
        tmp_path,
        architecture=architecture,
        sae=sae,
        training_tokens=1024,
        checkpoint_path=None,
        dead_feature_window=2,  # features count as dead early, so auxiliary losses run too
        token_selection="all",
    )
    trained = VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels).run()
    loaded = SAE.load_from_disk(tmp_path / "out")
    saved_as = {"batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}.get(architecture, architecture)
    assert loaded.cfg.architecture() == saved_as and loaded.cfg.metadata["hook_name"] == HOOK
    x = torch.randn(20, 64)
    assert torch.isfinite(loaded(x)).all()
    if architecture in ("standard", "topk", "gated", "jumprelu"):  # same encoder at inference as in training
        trained.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), trained.decode(trained.encode(x)), rtol=1e-5, atol=1e-5)


def test_multi_hook_run_from_cache_with_checkpoints_and_exact_resume(model, pixels, tmp_path):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    common = dict(
        hook_name=hooks,
        token_selection="patches",
        cached_activations_path=str(tmp_path / "cache"),
        cache_chunk_images=4,
        train_batch_size_tokens=64,
        training_tokens=64 * 30,
        activations_mixing_fraction=0.0,
        shuffle_images=False,
        n_batches_in_buffer=1,
        checkpoint_every_tokens=64 * 10,
    )
    runner = VisionSAETrainingRunner(config(tmp_path, **common), override_model=model, override_source=pixels)
    saes = runner.run()
    assert set(saes) == set(hooks)
    assert sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.is_dir()) == [704, 1344]
    for hook in hooks:
        assert SAE.load_from_disk(tmp_path / "out" / hook).cfg.d_in == (64 if "resid" in hook else 256)
    log = json.loads((tmp_path / "ckpt" / "eval_log.json").read_text())
    assert [r["kind"] for r in log] == ["checkpoint", "checkpoint", "final"]
    assert set(log[0]["metrics"]) == set(hooks)

    resumed = VisionSAETrainingRunner(
        config(
            tmp_path,
            **common,
            output_path=str(tmp_path / "out2"),
            checkpoint_path=str(tmp_path / "ckpt2"),
            resume_from_checkpoint=str(tmp_path / "ckpt" / "704"),
        ),
        override_model=model,
        override_source=pixels,
    )
    again = resumed.run()
    assert sorted(p.name for p in (tmp_path / "ckpt2").iterdir() if p.is_dir()) == [
        "1344"
    ]  # no re-checkpoint
    assert resumed.trainer.n_training_samples == 64 * 30
    for hook in hooks:  # same data from the same position, same optimiser state: the same weights
        for name, value in saes[hook].state_dict().items():
            torch.testing.assert_close(again[hook].state_dict()[name], value, rtol=1e-4, atol=1e-6)
    ckpt = load_file(tmp_path / "ckpt" / "1344" / hooks[0] / "sae_weights.safetensors")
    assert set(ckpt) >= {"W_enc", "W_dec", "b_enc", "b_dec"}


def test_training_from_a_finished_cache_needs_no_model(model, pixels, tmp_path):
    cfg = config(tmp_path, cached_activations_path=str(tmp_path / "cache"), checkpoint_path=None)
    VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels).run()
    # TINY_SPEC cannot be loaded: a second run can only succeed by reading the cache alone
    cache_only = dict(
        cached_activations_path=str(tmp_path / "cache"),
        checkpoint_path=None,
        output_path=str(tmp_path / "out2"),
    )
    again = VisionSAETrainingRunner(config(tmp_path, dataset_path="", **cache_only))
    again.run()
    assert again._model is None
    meta = SAE.load_from_disk(tmp_path / "out2").cfg.metadata
    assert meta["model_name"] == TINY_SPEC and meta["image_size"] == 32 and meta["dataset"]["n_images"] == 40
    # the same images may be named again (checked against the cache without the model); others are refused
    VisionSAETrainingRunner(
        config(tmp_path, **{**cache_only, "output_path": str(tmp_path / "o3")}), override_source=pixels
    ).setup()
    with pytest.raises(CacheMismatchError, match="other images"):
        VisionSAETrainingRunner(
            config(tmp_path, **cache_only, overwrite_output=True), override_source=pixels[:20]
        ).setup()


def test_yaml_config_presets_and_cli(model, pixels, tmp_path, capsys):
    VisionSAETrainingRunner(
        config(tmp_path, cached_activations_path=str(tmp_path / "cache"), checkpoint_path=None),
        override_model=model,
        override_source=pixels,
    ).run()
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text(
        f"preset: topk\nmodel_name: {TINY_SPEC}\nhook_name: {HOOK}\ndataset_path: ''\n"
        f"cached_activations_path: {tmp_path / 'cache'}\n"
        f"training_tokens: 2048\ntrain_batch_size_tokens: 128\nlr_warm_up_steps: 1\ndevice: cpu\n"
        f"checkpoint_path: null\nexpansion_factor: 2\nprefetch_batches: 0\nn_eval_images: 8\n"
    )
    cfg = VisionSAERunnerConfig.from_file(yaml_file)
    # the topk preset keeps its features alive (unit decoder rows, 4x auxiliary loss); paper-topk is the released one
    assert cfg.architecture == "topk" and cfg.sae == {"k": 64, "aux_loss_coefficient": 4.0} and cfg.lr == 4e-4
    assert cfg.decoder_init_norm == 1.0
    paper = VisionSAERunnerConfig.from_preset("paper-topk")
    assert paper.sae == {"k": 64} and paper.decoder_init_norm == 0.1
    assert VisionSAERunnerConfig.from_dict(json.loads(cfg.to_json())) == cfg
    # a config of the previous release (its field names) still loads, to the same config, with a warning per name
    old_names = {
        "model_name": "model_spec",
        "dataset_path": "dataset",
        "cached_activations_path": "cache_path",
    }
    old_yaml = yaml_file.read_text()
    for new, old in old_names.items():
        old_yaml = old_yaml.replace(f"{new}:", f"{old}:")
    (tmp_path / "old.yaml").write_text(old_yaml + "buffer_batches: 16\nmix_fraction: 0.5\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert VisionSAERunnerConfig.from_file(tmp_path / "old.yaml") == cfg
    said = sorted(str(w.message).split("'")[1] for w in caught if w.category is FutureWarning)
    assert said == ["buffer_batches", "cache_path", "dataset", "mix_fraction", "model_spec"]
    # wandb settings moved under `logger`, sae_lens' own LoggingConfig, as in LanguageModelSAERunnerConfig
    with pytest.warns(FutureWarning, match=r"\['run_name', 'wandb_project'\] now live under 'logger'"):
        flat = VisionSAERunnerConfig.from_dict(
            {**cfg.to_dict(), "logger": {}, "wandb_project": "p", "run_name": "r"}
        )
    assert type(flat.logger).__name__ == "LoggingConfig" and flat.logger.__module__ == "sae_lens.config"
    assert (flat.logger.wandb_project, flat.logger.run_name, flat.logger.log_to_wandb) == ("p", "r", False)
    assert VisionSAERunnerConfig.from_dict(json.loads(flat.to_json())) == flat
    with pytest.raises(ValueError, match=r"unknown logger field\(s\) \['colour'\]"):
        VisionSAERunnerConfig.from_dict({"logger": {"colour": 1}})
    with pytest.raises(ValueError, match="both 'dataset' and 'dataset_path' are set"):
        VisionSAERunnerConfig.from_dict({"dataset": "a", "dataset_path": "b"})
    assert (
        cli_main(["train", "--config", str(yaml_file), "--set", "sae.k=4", "--lr", "0.002", "--print-config"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["sae"] == {"k": 4, "aux_loss_coefficient": 4.0}
        and printed["lr"] == 0.002
        and printed["preset"] == "topk"
    )
    out = tmp_path / "cli_out"
    assert cli_main(["train", "--config", str(yaml_file), "--set", "sae.k=4", "--out", str(out)]) == 0
    assert SAE.load_from_disk(out).cfg.architecture() == "topk"
    printed = capsys.readouterr().out
    assert "explained_variance=" in printed and f"{HOOK} verdict: EV " in printed  # usable, or what to change
    assert (
        cli_main(["train", "--config", str(yaml_file), "--training-tokens", "10"]) == 2
    )  # smaller than one batch


def test_default_config_is_the_paper_recipe():
    cfg = VisionSAERunnerConfig()
    assert (
        cfg.architecture,
        cfg.expansion_factor,
        cfg.lr,
        cfg.lr_scheduler_name,
        cfg.lr_warm_up_steps,
        cfg.train_batch_size_tokens,
        cfg.token_selection,
    ) == ("standard", 64, 4e-4, "cosineannealing", 200, 4096, "all")
    assert "l1_coefficient" in cfg.sae_kwargs() and not cfg.logger.log_to_wandb
    topk = VisionSAERunnerConfig.from_preset("topk")
    assert topk.architecture == "topk" and topk.sae_kwargs()["k"] == 64
    # the dead-feature window is a twentieth of the run, at most sae_lens' 1000 steps
    assert cfg.dead_feature_window == 1000  # 31,738 steps
    short = VisionSAERunnerConfig(training_tokens=409_600, train_batch_size_tokens=2048, lr_warm_up_steps=20)
    assert short.dead_feature_window == 10  # 200 steps: a 1000-step window would never mark a feature dead
    assert VisionSAERunnerConfig(dead_feature_window=7).dead_feature_window == 7


def test_interrupt_saves_a_checkpoint_that_resumes(model, pixels, tmp_path, monkeypatch):
    from sae_clip_plugin.training.provider import ActivationProvider

    real_next, drawn = ActivationProvider.__next__, []

    def interrupting_next(self):
        drawn.append(1)
        if len(drawn) == 6:
            raise KeyboardInterrupt
        return real_next(self)

    monkeypatch.setattr(ActivationProvider, "__next__", interrupting_next)
    with pytest.raises(KeyboardInterrupt) as info:
        VisionSAETrainingRunner(
            config(tmp_path, training_tokens=128 * 12), override_model=model, override_source=pixels
        ).run()
    # where the resume command is printed, the resume is said to be exact (tests/training/test_training_exact_resume)
    assert "--resume-from-checkpoint latest (the resumed run trains on the same batches" in str(info.value)
    monkeypatch.setattr(ActivationProvider, "__next__", real_next)
    (saved,) = [p for p in (tmp_path / "ckpt").iterdir() if p.is_dir()]
    assert saved.name == str(5 * 128) and (saved / "provider_state.json").is_file()
    resumed = VisionSAETrainingRunner(
        config(tmp_path, training_tokens=128 * 12, resume_from_checkpoint=str(saved)),
        override_model=model,
        override_source=pixels,
    )
    resumed.run()
    assert (
        resumed.trainer.n_training_samples == 128 * 12
        and SAE.load_from_disk(tmp_path / "out").cfg.d_sae == 128
    )


@pytest.mark.parametrize("hooks", [HOOK, ["blocks.0.hook_resid_post", HOOK]])
def test_wandb_logging_calls_the_vision_evaluator(model, pixels, tmp_path, monkeypatch, hooks):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    results: list[dict] = []
    for name in ("_wandb_evaluator", "_multi_wandb_evaluator"):
        real = getattr(VisionSAETrainingRunner, name)

        def spy(self, *args, _real=real, **kwargs):
            results.append(_real(self, *args, **kwargs))
            return results[-1]

        monkeypatch.setattr(VisionSAETrainingRunner, name, spy)
    cfg = config(
        tmp_path,
        hook_name=hooks,
        training_tokens=128 * 8,
        logger={"log_to_wandb": True, "wandb_log_frequency": 1, "eval_every_n_wandb_logs": 4},
        checkpoint_path=None,
    )
    VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels).run()
    assert len(results) == 2  # steps 4 and 8: sae_lens called our evaluator through its wandb path
    prefix = "" if isinstance(hooks, str) else "blocks.0.hook_resid_post/"
    assert results[-1][prefix + "vision/l0"] >= 0 and prefix + "vision/explained_variance" in results[-1]


def test_metadata_seqpos_slice_follows_the_hook():
    from sae_clip_plugin.training import vision_metadata

    model_cfg = {"image_size": 224, "patch_size": 32, "model_spec": "open_clip:ViT-B-32/x"}
    geometry = {
        "hook_name": "hook_patch_embed",
        "token_selection": "patches",
        "has_cls": False,
        "context_size": 49,
    }
    assert vision_metadata(model_cfg, geometry, {"name": "d"})["seqpos_slice"] == (None,)
    meta = vision_metadata(
        model_cfg, {**geometry, "hook_name": "blocks.0.hook_resid_post", "has_cls": True}, {}
    )
    assert (
        meta["seqpos_slice"] == (1, None)
        and meta["n_tokens"] == 50
        and meta["model_name"] == "open_clip:ViT-B-32/x"
    )
