"""The training recipe: runs, lowers the contrastive loss, writes float16 safetensors, resumes exactly."""

from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors import safe_open

from sae_clip_plugin.toy import WorldConfig, create_toy_clip, toy_tokenizer, train_toy_clip
from sae_clip_plugin.toy.model import ROWS_KEY
from sae_clip_plugin.toy.train import make_batch

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16},
    "text_cfg": {"layers": 1, "width": 32, "heads": 2},
}
RECIPE = {"seed": 3, "batch_size": 24, "lr": 3e-3, "warmup": 1, "model_overrides": TINY, "progress": False}


def _held_out_loss(model) -> float:
    images, texts = make_batch(seed=1000, step=0, batch_size=48, cfg=WorldConfig(), tokenizer=toy_tokenizer())
    model.eval()
    with torch.no_grad():
        return open_clip.ClipLoss()(*model(images, texts)[:3]).item()


def test_recipe_lowers_the_loss_and_writes_float16(tmp_path):
    out = tmp_path / "tiny.safetensors"
    result = train_toy_clip(out, steps=12, **RECIPE)
    torch.manual_seed(RECIPE["seed"])
    init = create_toy_clip(**TINY)  # the recipe's initialisation, re-made from the seed
    assert _held_out_loss(result["model"]) < _held_out_loss(init) - 0.05
    assert len(result["losses"]) == 12
    with safe_open(str(out), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        recipe = f.metadata()["recipe"]
    assert dtypes.pop(ROWS_KEY) == torch.int64  # indices of the trained token-embedding rows
    assert set(dtypes.values()) == {torch.float16}
    assert '"steps": 12' in recipe
    assert not out.with_name(out.name + ".ckpt").exists()


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight = train_toy_clip(tmp_path / "a.safetensors", steps=4, **RECIPE)

    def stop_at_3(step, model):
        if step == 3:
            raise KeyboardInterrupt

    out = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_toy_clip(out, steps=4, checkpoint_every=2, callback=stop_at_3, **RECIPE)
    assert out.with_name(out.name + ".ckpt").exists() and not out.exists()
    resumed = train_toy_clip(out, steps=4, checkpoint_every=2, **RECIPE)
    assert resumed["losses"] == pytest.approx(straight["losses"], rel=1e-5)
    for (k, a), b in zip(
        straight["model"].state_dict().items(), resumed["model"].state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


class _PlantedPayload:
    """Pickles as a call that writes a marker file: what a planted `.ckpt` would run under weights_only=False."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_planted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    """toy-train resumes from `<out>.ckpt` in the working directory: a file planted there must not execute."""
    out = tmp_path / "planted.safetensors"
    marker = tmp_path / "executed"
    torch.save(
        {"recipe": _PlantedPayload(marker), "model": {}, "opt": {}, "step": 0},
        out.with_name(out.name + ".ckpt"),
    )
    with pytest.raises(
        RuntimeError,
        match=r"planted.safetensors.ckpt is not a toy-train checkpoint.*nothing in it was run.*Delete it",
    ):
        train_toy_clip(out, steps=2, **RECIPE)
    assert not marker.exists()
    assert not out.exists()
