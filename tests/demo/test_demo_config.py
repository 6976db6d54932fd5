"""Demo settings: layer choice, budgets, and refusing to mix runs made with other settings."""

from __future__ import annotations

import pytest

from sae_clip_plugin.demo import FAST, FULL, DemoConfig, SettingsMismatchError
from sae_clip_plugin.demo.state import DemoState


def test_layers_spread_and_end_at_the_last_block():
    assert DemoConfig.make("x").choose_layers(6) == [1, 3, 5]
    assert DemoConfig.make("x").choose_layers(12) == [3, 7, 11]
    assert DemoConfig.make("x", fast=True).choose_layers(6) == [2, 5]
    assert DemoConfig.make("x").choose_layers(2) == [0, 1]
    assert DemoConfig.make("x", layers=(4, 2, 4)).choose_layers(6) == [2, 4]
    with pytest.raises(ValueError, match="do not exist"):
        DemoConfig.make("x", layers=(6,)).choose_layers(6)


def test_budgets_and_validation():
    assert DemoConfig.make("x")["training_tokens"] == FULL["training_tokens"]
    assert (
        DemoConfig.make("x", fast=True)["training_tokens"]
        == FAST["training_tokens"]
        < FULL["training_tokens"]
    )
    assert DemoConfig.make("x", budgets={"n_train_images": 7})["n_train_images"] == 7
    assert set(FAST) == set(FULL)
    with pytest.raises(ValueError, match="unknown budget"):
        DemoConfig.make("x", budgets={"n_imgs": 7})
    with pytest.raises(ValueError, match="architectures"):
        DemoConfig.make("x", architectures=("gated",))
    # the training budget fits the runner's checks (warm-up shorter than the run)
    for b in (FAST, FULL):
        assert b["lr_warm_up_steps"] < b["training_tokens"] // b["train_batch_size_tokens"]


def test_a_rerun_with_other_settings_is_refused_unless_forced(tmp_path):
    DemoState(DemoConfig.make(str(tmp_path), fast=True), log=lambda _: None).open()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "harvest.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("a user's file")
    DemoState(
        DemoConfig.make(str(tmp_path), fast=True, device="cuda"), log=lambda _: None
    ).open()  # device: same run
    with pytest.raises(SettingsMismatchError, match="fast"):
        DemoState(DemoConfig.make(str(tmp_path)), log=lambda _: None).open()
    DemoState(DemoConfig.make(str(tmp_path)), log=lambda _: None).open(force=True)
    assert not (tmp_path / "state").exists()  # the demo's own outputs are gone...
    assert (tmp_path / "mine.txt").exists()  # ...and nothing else


def test_steps_are_skipped_once_marked(tmp_path):
    state = DemoState(DemoConfig.make(str(tmp_path), fast=True), log=lambda _: None)
    state.open()
    calls = []
    first = state.step("a", "step a", lambda: calls.append(1) or {"value": 3}, 1, 1)
    second = state.step("a", "step a", lambda: calls.append(2) or {"value": 4}, 1, 1)
    assert first == second == {"value": 3} and calls == [1]
    assert state.result("a") == {"value": 3}


def test_a_failing_step_leaves_no_marker(tmp_path):
    state = DemoState(DemoConfig.make(str(tmp_path), fast=True), log=lambda _: None)
    state.open()

    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        state.step("b", "step b", boom, 1, 1)
    assert not state.done("b")


def test_force_never_clears_a_folder_no_demo_wrote(tmp_path):
    """`--force` on a project folder that merely has demo-like names (cache/, figures/, ...) deletes nothing."""
    for name in ("cache", "figures", "metrics", "state"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.bin").write_text("precious")
    (tmp_path / "report.md").write_text("my report")
    with pytest.raises(SettingsMismatchError, match="no demo wrote them; nothing was deleted"):
        DemoState(DemoConfig.make(str(tmp_path), fast=True), log=lambda _: None).open(force=True)
    assert all((tmp_path / n / "data.bin").read_text() == "precious" for n in ("cache", "figures", "metrics"))
    assert (tmp_path / "report.md").read_text() == "my report"


def test_bad_layers_are_refused_before_force_deletes_anything(tmp_path):
    from sae_clip_plugin.demo.pipeline import DemoRun
    from tests.training.conftest import tiny_model

    DemoState(DemoConfig.make(str(tmp_path), fast=True), log=lambda _: None).open()
    (tmp_path / "report.md").write_text("an earlier demo's report")
    run = DemoRun(
        DemoConfig.make(str(tmp_path), fast=True, layers=(99,)), model=tiny_model(), log=lambda _: None
    )
    with pytest.raises(ValueError, match=r"layers \[99\] do not exist"):
        run.run(force=True)
    assert (tmp_path / "report.md").read_text() == "an earlier demo's report"
