"""SAEs trained on a processed model (Prisma: fold_ln + center_writing_weights + fold_value_biases) get exactly
the activations they were trained on through the plugin's default, unprocessed model."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens.weight_processing import ProcessWeights

from sae_clip_plugin import HookedSAEViT
from sae_clip_plugin.analysis.steering.interventions import steer
from sae_clip_plugin.model.weights import fold_value_biases
from tests.model.clips import small_open_clip, tiny_open_clip

PRISMA = {"fold_ln": True, "center_writing_weights": True, "fold_value_biases": True}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models() -> tuple[HookedSAEViT, HookedSAEViT]:
    clip = tiny_open_clip(layers=3)
    return HookedSAEViT.from_open_clip(clip), HookedSAEViT.from_open_clip(clip, **PRISMA)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def sae_at(hook: str, normalize: str, processing: dict | None = PRISMA, seed: int = 0) -> StandardSAE:
    metadata = SAEMetadata(hook_name=hook, weight_processing=processing)
    sae = StandardSAE(
        StandardSAEConfig(d_in=64, d_sae=96, normalize_activations=normalize, metadata=metadata)
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.ndim == 1 else p.shape[0] ** -0.5))
    return sae.eval()


def acts(model: HookedSAEViT, x: torch.Tensor, hook: str) -> torch.Tensor:
    _, cache = model.run_with_cache(x, names_filter=hook)
    return cache[hook]


@pytest.mark.parametrize("hook", ["blocks.1.hook_mlp_out", "blocks.2.hook_attn_out"])
@torch.no_grad()
def test_unnormalised_sae_gets_the_processed_activations(models, x, hook):
    raw, processed = models
    sae = sae_at(hook, "none")
    trained_on = acts(processed, x, hook)
    assert not torch.allclose(acts(raw, x, hook), trained_on, atol=1e-3)  # processing matters here
    expected = sae.encode(trained_on)  # what the SAE computed during training
    for model in (raw, processed):  # the default (raw) model, and the processed one, give the same features
        out, cache = model.run_with_cache_with_saes(x, saes=[sae], use_error_term=True)
        torch.testing.assert_close(cache[f"{hook}.hook_sae_acts_post"], expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-4)  # error term: output unchanged
    # steering goes through the same input: clamping a feature to its own value changes nothing...
    with steer(raw, sae, {3: 0.0}, mode="add"):
        torch.testing.assert_close(raw(x), processed(x), atol=1e-5, rtol=1e-4)
    # ... and clamping to zero moves the output exactly as on the processed model
    with steer(raw, sae, {3: 0.0}):
        a = raw(x)
    with steer(processed, sae, {3: 0.0}):
        b = processed(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a, raw(x), atol=1e-4)


@torch.no_grad()
def test_an_unprocessed_sae_is_left_alone(models, x):
    raw, _ = models
    hook = "blocks.1.hook_mlp_out"
    sae = sae_at(hook, "none", processing={"fold_ln": False, "center_writing_weights": False})
    _, cache = raw.run_with_cache_with_saes(x, saes=[sae])
    torch.testing.assert_close(cache[f"{hook}.hook_sae_acts_post"], sae.encode(acts(raw, x, hook)))


@torch.no_grad()
def test_layer_norm_saes_are_unchanged_by_processing(models, x):
    raw, processed = models
    hook = "blocks.1.hook_resid_post"
    sae = sae_at(hook, "layer_norm")
    a, b = acts(raw, x, hook), acts(processed, x, hook)
    assert not torch.allclose(a, b, atol=1e-3)
    torch.testing.assert_close(sae.encode(a), sae.encode(b), atol=1e-5, rtol=1e-4)
    _, cache = raw.run_with_cache_with_saes(x, saes=[sae])
    torch.testing.assert_close(cache[f"{hook}.hook_sae_acts_post"], sae.encode(b), atol=1e-5, rtol=1e-4)


def test_a_mismatch_the_plugin_cannot_bridge_is_reported(models):
    raw, processed = models
    sae = sae_at("blocks.1.hook_resid_post", "none")  # residual: the shift depends on the stream's start
    with pytest.raises(ValueError, match=r"center_writing_weights=True\)"):
        raw.add_sae(sae)
    processed.add_sae(sae)  # the processed model is what it was trained on
    processed.reset_saes()


def test_prisma_metadata_records_the_processing(tmp_path):
    import json

    from sae_clip_plugin.pretrained import load_prisma_sae
    from sae_clip_plugin.pretrained.prisma import NO_WEIGHT_PROCESSING, PRISMA_WEIGHT_PROCESSING

    torch.save(
        {k: v for k, v in sae_at("blocks.1.hook_mlp_out", "none").state_dict().items()}, tmp_path / "w.pt"
    )
    (tmp_path / "config.json").write_text(
        json.dumps({"hook_point_layer": 1, "layer_subtype": "hook_mlp_out"})
    )
    assert load_prisma_sae(tmp_path / "w.pt").cfg.metadata.weight_processing == PRISMA_WEIGHT_PROCESSING
    old = load_prisma_sae(tmp_path / "w.pt", weight_processing=NO_WEIGHT_PROCESSING)
    assert old.cfg.metadata.weight_processing == NO_WEIGHT_PROCESSING


@torch.no_grad()
def test_fold_value_biases_matches_transformer_lens_and_keeps_the_output(x):
    clip = small_open_clip("ViT-B-32", layers=2)
    for block in clip.visual.transformer.resblocks:  # open_clip initialises biases to 0: make them count
        block.attn.in_proj_bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    raw = HookedSAEViT.from_open_clip(clip)
    folded = HookedSAEViT.from_open_clip(clip, fold_value_biases=True)
    sd = {k: v for k, v in raw.state_dict().items() if not k.startswith("text.")}
    ours = fold_value_biases(sd, raw.cfg)
    theirs = ProcessWeights.fold_value_biases(sd, raw.tl_cfg)  # transformer_lens' own implementation
    for layer in range(2):
        for name in ("b_O", "b_V"):
            key = f"blocks.{layer}.attn.{name}"
            torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=1e-5)
    assert bool(raw.state_dict()["blocks.0.attn.b_V"].abs().sum() > 0)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(folded(pixels), raw(pixels), atol=1e-5, rtol=1e-4)
    hooks = ["blocks.1.attn.hook_v", "blocks.1.hook_attn_out"]
    _, a = raw.run_with_cache(pixels, names_filter=hooks)
    _, b = folded.run_with_cache(pixels, names_filter=hooks)
    torch.testing.assert_close(a["blocks.1.hook_attn_out"], b["blocks.1.hook_attn_out"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        a["blocks.1.attn.hook_v"] - raw.state_dict()["blocks.1.attn.b_V"],
        b["blocks.1.attn.hook_v"],
        atol=1e-5,
        rtol=0,
    )
