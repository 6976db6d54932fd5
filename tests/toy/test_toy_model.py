"""The bundled toy CLIP: registered in open_clip, loadable offline, and showing the planted effects."""

from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors import safe_open

from sae_clip_plugin.toy import (
    MODEL_NAME,
    SHAPES,
    WEIGHTS_PATH,
    evaluate_toy_clip,
    load_toy_clip,
    register_toy_config,
    toy_classnames,
    toy_templates,
    typographic_set,
)
from sae_clip_plugin.toy.evaluate import open_clip_zero_shot_logits, zero_shot_weights


@pytest.fixture(scope="module")
def toy():
    return load_toy_clip()


@pytest.fixture(scope="module")
def result(toy):
    # Small sets keep the test fast; the full numbers come from `sae-clip toy-eval`.
    return evaluate_toy_clip(*toy, n_typographic=150, n_per_group=40, seed=99)


def test_registration_is_idempotent_and_open_clip_builds_the_model():
    register_toy_config()
    register_toy_config()
    assert open_clip.list_models().count(MODEL_NAME) == 1
    model = open_clip.create_model(MODEL_NAME)
    assert isinstance(model, open_clip.CLIP)
    assert model.visual.image_size == (64, 64) and model.visual.patch_size == (8, 8)
    tok = open_clip.get_tokenizer(MODEL_NAME)
    assert tok(["a photo of a star."]).shape == (1, 16)


def test_bundled_weights_are_small_float16_and_load_in_float32(toy):
    assert WEIGHTS_PATH.stat().st_size <= 10_000_000
    model, preprocess, _ = toy
    assert not model.training
    from sae_clip_plugin.toy.model import EMBEDDING_KEY, ROWS_KEY, VALUES_KEY, read_weights

    with safe_open(str(WEIGHTS_PATH), "pt") as f:
        keys = set(f.keys())
        # the token embedding is stored as the rows training touched (the rest of the 49408 are never used)
        assert keys == set(model.state_dict()) - {EMBEDDING_KEY} | {ROWS_KEY, VALUES_KEY}
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys - {ROWS_KEY})
    state = read_weights(WEIGHTS_PATH)
    for k, value in model.state_dict().items():
        torch.testing.assert_close(value, state[k], rtol=0, atol=0)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert preprocess(typographic_set(1)[0][0]).shape == (3, 64, 64)


def test_helpers_name_the_classes_and_templates():
    assert toy_classnames() == list(SHAPES) and len(SHAPES) >= 6
    assert all("{}" in t for t in toy_templates())


def test_bundled_weights_come_from_the_default_recipe():
    """The weights' metadata records the recipe; it must be what `sae-clip toy-train` runs by default."""
    import json

    from sae_clip_plugin.toy import WorldConfig
    from sae_clip_plugin.toy.train import DEFAULTS

    with safe_open(str(WEIGHTS_PATH), "pt") as f:
        recipe = json.loads(f.metadata()["recipe"])
    assert recipe == {**DEFAULTS, "world": WorldConfig().to_dict(), "model_overrides": {}}


def test_zero_shot_logits_match_open_clip_forward(toy):
    """evaluate's logits equal CLIP.forward's own logit_scale * image @ text.T."""
    model, preprocess, tokenizer = toy
    ds = typographic_set(3, seed=0)
    ours = open_clip_zero_shot_logits(model, preprocess, ds, zero_shot_weights(model, tokenizer, SHAPES))
    images = torch.stack([preprocess(img) for img, _ in ds.items()])
    with torch.no_grad():
        img_f, txt_f, scale = model(images, tokenizer([toy_templates()[0].format(c) for c in SHAPES]))[:3]
    torch.testing.assert_close(ours, scale * img_f @ txt_f.T, atol=1e-4, rtol=1e-4)


def test_nonword_control_changes_only_the_written_word(toy):
    """The control set is the attacked set with each class name replaced by a non-word of its length."""
    import dataclasses

    from sae_clip_plugin.toy.evaluate import nonword_twins

    model, preprocess, tokenizer = toy
    res = evaluate_toy_clip(model, preprocess, tokenizer, n_typographic=4, n_per_group=1, seed=5)
    typo = typographic_set(4, seed=5)
    attacked = [s for s, m in zip(typo.samples, typo.labels, strict=True) if m["variant"] == "attacked"]
    control = nonword_twins(typo, seed=5)
    for s, c in zip(attacked, control.samples, strict=True):
        assert dataclasses.replace(c, word=s.word) == s  # same image but for the word
        assert len(c.word) == len(s.word) and c.word not in SHAPES and c.word.isalpha()
    labels = torch.tensor([m["label"] for m in typo.labels if m["variant"] == "attacked"])
    images = torch.stack([preprocess(img) for img, _ in control.items()])
    with torch.no_grad():
        emb = model.encode_image(images, normalize=True)
    pred = (emb @ zero_shot_weights(model, tokenizer, SHAPES).T).argmax(-1)
    assert res["nonword_accuracy"] == pytest.approx((pred == labels).float().mean().item())


def test_clean_zero_shot_accuracy_is_high(result):
    assert result["clean_accuracy"] >= 0.90


def test_typographic_attack_drops_accuracy_by_30_points(result):
    assert result["typographic_drop"] >= 0.30  # the word beside the shape: reading alone
    assert result["anywhere"]["typographic_drop"] >= 0.30  # as in training, often over the shape
    # the drop comes from reading: on attacked images the written word is predicted at least twice as often
    # as an average one of the other wrong classes (uniform confusion would make them equal)
    other_wrong = 1.0 - result["attacked_accuracy"] - result["attack_success_rate"]
    assert result["attack_success_rate"] >= 2 * other_wrong / (len(SHAPES) - 2)


def test_the_drop_is_reading_a_nonword_at_the_same_place_costs_little(result):
    """A random non-word of the same length, same place, size and ink: at most 8 points (the world's bar; the
    model reads class names, it is not merely disturbed by text being there)."""
    assert result["clean_accuracy"] - result["nonword_accuracy"] <= 0.08


@pytest.mark.parametrize("name", ["background", "colour"])
def test_spurious_worst_group_is_20_points_below_mean(result, name):
    r = result[name]
    assert r["gap"] >= 0.20
    assert r["mean_accuracy"] >= 0.6  # a real classifier, not a constant one
    # the worst group is a minority group (its attribute goes with the other class in training)
    assert r["worst_group"] not in {f"{c}/{v}" for c, v in _majority(name).items()}


def _majority(name: str) -> dict[str, str]:
    from sae_clip_plugin.toy import WorldConfig

    cfg = WorldConfig()
    return cfg.background_spurious if name == "background" else cfg.colour_spurious
