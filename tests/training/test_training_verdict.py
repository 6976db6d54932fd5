"""Before training, a budget of hundreds of epochs is refused with the flag that overrides it; after, one line says
whether the SAE is usable and what to change."""

from __future__ import annotations

import pytest

from sae_clip_plugin.training import VisionSAETrainingRunner
from sae_clip_plugin.training.verdict import check_epochs, verdict
from tests.training.test_training_runner import config


def test_a_budget_of_hundreds_of_epochs_is_refused_with_the_fixes(model, pixels, tmp_path):
    # 40 images x 17 tokens = 680 tokens a pass; the paper's 130M-token budget would be ~190,000 passes
    cfg = config(tmp_path, training_tokens=680 * 101, token_selection="all")
    with pytest.raises(ValueError, match=r"is 101 passes over your 40 images \(680 tokens each pass\), more than "
                                         r"max_epochs=100: lower --training-tokens \(e\.g\. 34,000\), add images, or "
                                         r"raise --max-epochs"):  # fmt: skip
        VisionSAETrainingRunner(cfg, override_model=model, override_source=pixels).setup()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # refused before any work
    allowed = config(tmp_path, training_tokens=680 * 101, token_selection="all", max_epochs=200)
    with pytest.warns(UserWarning, match="reused for 101.0 epochs"):
        VisionSAETrainingRunner(allowed, override_model=model, override_source=pixels).setup()


def test_the_epoch_count_is_the_budget_over_one_pass():
    assert check_epochs(1000, 10, 50, max_epochs=5) == 2.0  # warns (reused), does not refuse
    with pytest.raises(ValueError, match="2 passes"):
        check_epochs(1000, 10, 50, max_epochs=1.5)


@pytest.mark.parametrize(
    ("metrics", "architecture", "expected"),
    [
        ({"explained_variance": 0.93, "dead_fraction_eval": 0.03}, "topk", "EV 0.930, dead 3.0%: usable"),
        ({"explained_variance": 0.29, "dead_fraction_eval": 0.58}, "topk",
         "EV 0.290, dead 58.0%: EV below 0.8: train longer (--training-tokens), widen the SAE (--expansion-factor) "
         "or, for TopK, raise k (--set sae.k=...); over 10% dead: use --preset topk"),
        ({"explained_variance": 0.9, "dead_fraction_eval": 0.2}, "standard",
         "EV 0.900, dead 20.0%: over 10% dead: lower the L1 coefficient"),
    ],
)  # fmt: skip
def test_the_verdict_names_what_to_change(metrics, architecture, expected):
    assert verdict(metrics, architecture).startswith(expected)


def test_the_topk_preset_sizes_what_the_user_did_not_set():
    from sae_clip_plugin.training.config import VisionSAERunnerConfig
    from sae_clip_plugin.training.sizing import sized_values

    # 50 PNGs of a 65-token, 128-wide model: 50 passes, small batches, x4, k = 512 / 32
    assert sized_values(50, 65, 128) == {
        "training_tokens": 162_500, "train_batch_size_tokens": 256, "expansion_factor": 4, "sae.k": 16,
        "lr": 3e-3, "lr_warm_up_steps": 31, "lr_end": None, "dead_feature_window": None,
    }  # fmt: skip
    # ImageNet on ViT-B/32: the paper's recipe
    big = sized_values(1_281_167, 50, 768)
    assert (big["training_tokens"], big["train_batch_size_tokens"], big["expansion_factor"], big["sae.k"]) == (
        130_000_000, 4096, 64, 64)  # fmt: skip
    assert big["lr"] == 4e-4 and big["lr_warm_up_steps"] == 200
    # what the user sets stays theirs; k follows their width
    cfg = VisionSAERunnerConfig.from_preset("topk", expansion_factor=8, lr=1e-3, output_path="o")
    sized, chosen = cfg.sized_to(50, 65, 128)
    assert "lr" not in chosen and "expansion_factor" not in chosen and chosen["sae.k"] == 32
    assert (sized.expansion_factor, sized.lr, sized.sae["k"], sized.training_tokens) == (8, 1e-3, 32, 162_500)
    assert sized.lr_end == pytest.approx(1e-4) and sized.dead_feature_window == 634 // 20
    assert (
        VisionSAERunnerConfig.from_preset("paper-topk").sized_to(50, 65, 128)[0].training_tokens
        == 130_000_000
    )


@pytest.mark.skipif(
    not __import__("sae_clip_plugin.toy", fromlist=["WEIGHTS_PATH"]).WEIGHTS_PATH.is_file(),
    reason="the bundled toy CLIP weights are not built yet",
)
def test_the_first_train_command_on_50_own_pngs_gives_a_usable_sae(tmp_path, capsys):
    """#30: `sae-clip train --preset topk --model toy --images FOLDER --hook ... --out ...`, no other flag, on 50
    PNGs: sized to the data, EV >= 0.8 and under 10% dead features (about 25 s on 2 cores)."""
    from sae_clip_plugin.cli import main
    from sae_clip_plugin.training.sources import image_source

    folder = tmp_path / "pngs"
    folder.mkdir()
    source = image_source("toy", max_images=50, seed=5).with_transform(lambda image: image)
    for i in range(len(source)):
        source[i].save(folder / f"{i:03d}.png")
    argv = ["train", "--preset", "topk", "--model", "toy", "--images", str(folder), "--hook",
            "blocks.3.hook_resid_post", "--out", str(tmp_path / "sae")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sized to 50 images x 65 tokens: training_tokens=162,500" in printed
    assert "verdict: EV 0.9" in printed and ": usable" in printed
