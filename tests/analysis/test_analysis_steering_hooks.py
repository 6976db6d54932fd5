"""Steering hooks: no-op and by-hand checks against the SAE's own weights, tokens, neurons, directions."""

from __future__ import annotations

import open_clip
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from sae_clip_plugin import HookedViT
from sae_clip_plugin.analysis.steering.interventions import (
    direction_hook,
    feature_means,
    neuron_hook,
    sae_feature_hook,
    steer,
)
from tests.model.clips import tiny_open_clip

HOOK = "blocks.1.hook_resid_post"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> HookedViT:
    return HookedViT.from_open_clip(tiny_open_clip(layers=3), tokenizer=open_clip.get_tokenizer("ViT-B-32"))


def make_sae(norm: str = "none", seed: int = 0) -> StandardSAE:
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=64, d_sae=96, normalize_activations=norm))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.3)
        sae.b_enc.normal_(0, 0.3)
    sae.cfg.metadata.hook_name = HOOK
    return sae


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def act(model: HookedViT, pixels: torch.Tensor) -> torch.Tensor:
    _, cache = model.run_with_cache(pixels, names_filter=[HOOK])
    return cache[HOOK]


def active_feature(sae: StandardSAE, act: torch.Tensor) -> int:
    f = sae.encode(act)
    return int((f > 0).float().sum((0, 1)).argmax())


@torch.no_grad()
def test_clamp_to_current_value_is_a_noop(model, pixels, act):
    sae = make_sae()
    j = active_feature(sae, act)
    clean = model(pixels[:1])
    f = sae.encode(act[:1])
    for pos in (0, 5):
        value = float(f[0, pos, j])
        assert value > 0 or pos == 5
        with steer(model, sae, {j: value}, tokens=[pos]):
            assert torch.allclose(model(pixels[:1]), clean, atol=1e-5)
    for mode, value in (("add", 0.0), ("scale", 1.0)):
        _name, fn = sae_feature_hook(sae, {j: value}, mode=mode)
        assert torch.allclose(fn(act, None), act, atol=1e-5)


@pytest.mark.parametrize("norm", ["none", "layer_norm"])
@torch.no_grad()
def test_clamp_to_zero_subtracts_the_decoder_contribution(model, pixels, act, norm):
    sae = make_sae(norm)
    j = active_feature(sae, act)
    # by hand from the SAE's parameters: f_j = relu((x_n - b_dec) . W_enc[:, j] + b_enc[j]), x_n the
    # per-token standardised input for layer_norm SAEs, whose output is scaled back by the token's std
    x = act
    if norm == "layer_norm":
        centred = x - x.mean(-1, keepdim=True)
        std = centred.std(-1, keepdim=True)
        x_n, out_scale = centred / (std + 1e-5), std
    else:
        x_n, out_scale = x, torch.ones_like(x[..., :1])
    f_j = torch.relu((x_n - sae.b_dec) @ sae.W_enc[:, j] + sae.b_enc[j])
    expected = x - f_j[..., None] * sae.W_dec[j] * out_scale
    assert f_j.abs().sum() > 0
    name, fn = sae_feature_hook(sae, [j], mode="zero")
    assert name == HOOK
    assert torch.allclose(fn(act, None), expected, atol=1e-5)
    # and through the model: the same as a hand-written hook
    by_hand = model.run_with_hooks(pixels, fwd_hooks=[(HOOK, lambda a, hook: expected)])
    with steer(model, sae, [j], mode="zero"):
        assert torch.allclose(model(pixels), by_hand, atol=1e-5)
    assert not model.hook_dict[HOOK].fwd_hooks  # removed after the block


@torch.no_grad()
def test_without_error_term_selected_tokens_become_the_reconstruction(act):
    sae = make_sae()
    j = active_feature(sae, act)
    _name, fn = sae_feature_hook(sae, {j: 2.0}, tokens="cls", use_error_term=False)
    out = fn(act, None)
    f = sae.encode(act)
    f[..., j] = 2.0
    assert torch.allclose(out[:, 0], (f @ sae.W_dec + sae.b_dec)[:, 0], atol=1e-5)
    assert torch.equal(out[:, 1:], act[:, 1:])


@torch.no_grad()
def test_token_selection_leaves_other_tokens_untouched(act):
    sae = make_sae()
    j = active_feature(sae, act)
    for tokens, chosen in (("cls", [0]), ("patches", list(range(1, 17))), ([2, -1], [2, 16])):
        out = sae_feature_hook(sae, {j: 50.0}, tokens=tokens)[1](act, None)
        others = [t for t in range(17) if t not in chosen]
        assert torch.equal(out[:, others], act[:, others])
        changed = out[:, chosen] - act[:, chosen]
        # the change at each selected token is (50 - f_j) W_dec[j]
        f_j = sae.encode(act)[:, chosen, j]
        assert torch.allclose(changed, (50.0 - f_j)[..., None] * sae.W_dec[j], atol=1e-4)


@torch.no_grad()
def test_neuron_and_direction_hooks(act):
    out = neuron_hook(HOOK, {3: 7.0, 10: -1.0}, tokens="cls")[1](act, None)
    assert torch.all(out[:, 0, 3] == 7.0) and torch.all(out[:, 0, 10] == -1.0)
    mask = torch.ones_like(act, dtype=torch.bool)
    mask[:, 0, [3, 10]] = False
    assert torch.equal(out[mask], act[mask])
    sae = make_sae()
    out = direction_hook(HOOK, sae.W_dec[5], 4.0)[1](act, None)
    assert torch.allclose(out, act + 4.0 * sae.W_dec[5], atol=1e-6)
    u = torch.zeros(64)
    u[7] = 2.0  # set the projection coefficient: x_7 / 2 becomes 3, i.e. x_7 becomes 6
    out = direction_hook(HOOK, u, 3.0, mode="set")[1](act, None)
    assert torch.allclose(out[..., 7], torch.full_like(out[..., 7], 6.0), atol=1e-5)
    assert torch.allclose(out[..., :7], act[..., :7])


@torch.no_grad()
def test_mean_ablation_uses_feature_means(model, pixels, act):
    sae = make_sae()
    means = feature_means(model, sae, pixels, batch_size=2)
    assert torch.allclose(means.double(), sae.encode(act).double().mean((0, 1)), atol=1e-5)
    j = active_feature(sae, act)
    out = sae_feature_hook(sae, [j], mode="mean", means=means)[1](act, None)
    f_j = sae.encode(act)[..., j]
    assert torch.allclose(out - act, (means[j] - f_j)[..., None] * sae.W_dec[j], atol=1e-5)


def test_bad_arguments_name_the_fix():
    sae = make_sae()
    with pytest.raises(ValueError, match="mode must be one of"):
        sae_feature_hook(sae, {1: 1.0}, mode="clamp")
    with pytest.raises(ValueError, match="needs a value per feature"):
        sae_feature_hook(sae, [1, 2], mode="set")
    with pytest.raises(ValueError, match="out of range"):
        sae_feature_hook(sae, {500: 1.0})
    with pytest.raises(ValueError, match="needs the features' mean"):
        sae_feature_hook(sae, [1], mode="mean")[1](torch.randn(1, 17, 64), None)
    with pytest.raises(ValueError, match=r"steering values must be finite numbers, got \{1: nan\}"):
        sae_feature_hook(sae, {1: float("nan")})
    with pytest.raises(ValueError, match="must be finite"):
        sae_feature_hook(sae, {2: float("-inf")}, mode="add")


def test_steering_at_a_hook_of_another_width_is_named(model, pixels):
    sae = make_sae()
    name, hook = sae_feature_hook(sae, {1: 2.0}, hook_name="blocks.0.mlp.hook_post")
    with pytest.raises(ValueError, match=r"d_in=64 but blocks\.0\.mlp\.hook_post is 256 wide"):
        model.run_with_hooks(pixels, fwd_hooks=[(name, hook)])


@pytest.mark.parametrize("norm", ["none", "layer_norm"])
def test_a_relative_strength_is_the_hand_computed_absolute_one(model, pixels, act, norm):
    """{feature: "relative:r"} sets the feature to r x RMS(|SAE input|) / |W_dec[feature]| (analysis/steering/
    strength.py), measured on the given images; here computed by hand from the cached activations."""
    from sae_clip_plugin.analysis.steering import relative_strengths

    sae = make_sae(norm)
    feature, r = active_feature(sae, act), 2.5
    x = act.double()
    if norm == "layer_norm":  # what the SAE encodes: each token normalised (sae_lens: unbiased std, eps 1e-5)
        x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)
    rms = x.norm(dim=-1).pow(2).mean().sqrt()
    by_hand = float(r * rms / sae.W_dec[feature].detach().double().norm())
    assert relative_strengths(model, sae, pixels, {feature: r})[feature] == pytest.approx(by_hand, rel=1e-6)
    with torch.no_grad(), steer(model, sae, {feature: "relative:2.5"}, images=pixels):
        relative = model(pixels)
    with torch.no_grad(), steer(model, sae, {feature: by_hand}):
        absolute = model(pixels)
    torch.testing.assert_close(relative, absolute, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pass images="), steer(model, sae, {feature: "relative:2.5"}):
        pass
    with (
        pytest.raises(ValueError, match="a number or 'relative:<r>'"),
        steer(model, sae, {feature: "x"}, images=pixels),
    ):
        pass
