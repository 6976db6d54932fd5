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
