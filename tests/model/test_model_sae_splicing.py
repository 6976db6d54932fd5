"""HookedSAEViT splices sae_lens SAEs exactly: error term, by-hand substitution, token masks, cleanup, errors."""

from __future__ import annotations

import open_clip
import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_clip_plugin import HookedViT
from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT

SPEC = "open_clip:sae-test-tiny"
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1},
}
N_TOKENS, D_MODEL = 17, 32  # 1 CLS + (32 / 8)^2 patches
HOOK = "blocks.0.hook_resid_post"


def tiny_clip(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY).eval()


@pytest.fixture(scope="module")
def model() -> HookedSAEViT:
    return HookedSAEViT.from_open_clip(tiny_clip(), model_spec=SPEC)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def make_sae(
    kind: str = "standard",
    hook: str = HOOK,
    d_in: int = D_MODEL,
    seed: int = 0,
    normalize: str = "none",
    **meta,
) -> SAE:
    """An SAE with random weights (biases included) so its reconstruction is far from the identity."""
    metadata = SAEMetadata(hook_name=hook, **meta)
    common = {"d_in": d_in, "d_sae": 4 * d_in, "normalize_activations": normalize, "metadata": metadata}
    sae = (
        TopKSAE(TopKSAEConfig(k=6, **common)) if kind == "topk" else StandardSAE(StandardSAEConfig(**common))
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim == 1 else p.shape[0] ** -0.5))
    return sae.eval()


def substituted(model: HookedViT, x: torch.Tensor, hook: str, fn) -> torch.Tensor:
    """The model's output with the activation at `hook` replaced by fn(activation), via a plain hook."""
    return model.run_with_hooks(x, fwd_hooks=[(hook, lambda t, hook: fn(t))])


SAE_CASES = [
    ("standard", HOOK, "none"),
    ("topk", HOOK, "none"),
    ("standard", HOOK, "layer_norm"),
    ("topk", "blocks.1.hook_mlp_out", "none"),
    ("standard", "blocks.1.mlp.hook_post", "none"),
]


@pytest.mark.parametrize(("kind", "hook", "normalize"), SAE_CASES)
@torch.no_grad()
def test_error_term_reproduces_clean_output(model, x, kind, hook, normalize) -> None:
    d_in = 4 * D_MODEL if hook.endswith("hook_post") else D_MODEL
    sae = make_sae(kind, hook, d_in=d_in, normalize=normalize)
    clean = model(x)
    with_error = model.run_with_saes(x, saes=[sae], use_error_term=True)
    without = model.run_with_saes(x, saes=[sae], use_error_term=False)
    assert (with_error - clean).abs().max() <= 1e-5
    assert (without - clean).abs().max() > 1e-2  # the SAE really changes the activation
    assert model.acts_to_saes == {}


@pytest.mark.parametrize(("kind", "hook", "normalize"), SAE_CASES)
@torch.no_grad()
def test_without_error_term_equals_substitution_by_hand(model, x, kind, hook, normalize) -> None:
    d_in = 4 * D_MODEL if hook.endswith("hook_post") else D_MODEL
    sae = make_sae(kind, hook, d_in=d_in, normalize=normalize)
    spliced = model.run_with_saes(x, saes=sae)
    by_hand = substituted(model, x, hook, lambda t: sae(t))
    torch.testing.assert_close(spliced, by_hand, atol=1e-6, rtol=0)


@torch.no_grad()
def test_layer_norm_sae_matches_hand_written_formula(model, x) -> None:
    sae = make_sae("standard", normalize="layer_norm")
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec

    def recon(t: torch.Tensor) -> torch.Tensor:
        mu = t.mean(-1, keepdim=True)
        std = (t - mu).std(-1, keepdim=True)
        f = torch.relu(((t - mu) / (std + 1e-5) - b_dec) @ W_enc + b_enc)
        return (f @ W_dec + b_dec) * std + mu

    torch.testing.assert_close(
        model.run_with_saes(x, saes=[sae]), substituted(model, x, HOOK, recon), atol=1e-5, rtol=0
    )


@torch.no_grad()
def test_hook_z_sae_with_reshaping(model, x) -> None:
    hook = "blocks.1.attn.hook_z"
    cfg = StandardSAEConfig(
        d_in=D_MODEL, d_sae=64, reshape_activations="hook_z", metadata=SAEMetadata(hook_name=hook)
    )
    sae = StandardSAE(cfg).eval()
    torch.testing.assert_close(
        model.run_with_saes(x, saes=[sae], use_error_term=True), model(x), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        model.run_with_saes(x, saes=[sae]), substituted(model, x, hook, lambda t: sae(t)), atol=1e-6, rtol=0
    )


# ------------------------------------------------------------------------------------------
# token masks


def spliced_activation(model: HookedSAEViT, x: torch.Tensor, sae: SAE, **kw) -> torch.Tensor:
    """What leaves the spliced hook (blocks.1.hook_resid_pre is the same tensor)."""
    _, cache = model.run_with_cache_with_saes(x, saes=[sae], names_filter=["blocks.1.hook_resid_pre"], **kw)
    return cache["blocks.1.hook_resid_pre"]


@torch.no_grad()
def test_cls_only_sae_leaves_patches_untouched(model, x) -> None:
    sae = make_sae(token_selection="cls", context_size=1)
    _, clean_cache = model.run_with_cache(x, names_filter=[HOOK])
    clean = clean_cache[HOOK]
    out = spliced_activation(model, x, sae)
    torch.testing.assert_close(out[:, 1:], clean[:, 1:], atol=0, rtol=0)
    torch.testing.assert_close(out[:, 0], sae(clean)[:, 0], atol=1e-6, rtol=0)
    assert (out[:, 0] - clean[:, 0]).abs().max() > 1e-2
    with_error = spliced_activation(model, x, sae, use_error_term=True)
    torch.testing.assert_close(with_error, clean, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("meta", "tokens", "changed"),
    [
        ({"token_selection": "patches", "context_size": N_TOKENS - 1}, None, list(range(1, N_TOKENS))),
        ({"token_selection": "all", "context_size": N_TOKENS}, None, list(range(N_TOKENS))),
        ({}, None, list(range(N_TOKENS))),  # no metadata: all tokens
        ({"token_selection": "cls", "context_size": 1}, "all", list(range(N_TOKENS))),  # override
        ({"token_selection": "all"}, [0, 5, -1], [0, 5, N_TOKENS - 1]),
    ],
)
@torch.no_grad()
def test_token_selection_decides_which_positions_change(model, x, meta, tokens, changed) -> None:
    sae = make_sae(**meta)
    _, clean_cache = model.run_with_cache(x, names_filter=[HOOK])
    clean = clean_cache[HOOK]
    out = spliced_activation(model, x, sae, tokens=tokens)
    expected = clean.clone()
    expected[:, changed] = sae(clean)[:, changed]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------
# cache, hooks, lifecycle


@torch.no_grad()
def test_cache_keys_and_steering_edit(model, x) -> None:
    sae = make_sae()
    _, cache = model.run_with_cache_with_saes(x, saes=[sae], use_error_term=True)
    keys = set(cache.keys())
    for suffix in ("input", "acts_pre", "acts_post", "recons", "error", "output"):
        assert f"{HOOK}.hook_sae_{suffix}" in keys
    acts = cache[f"{HOOK}.hook_sae_acts_post"]
    assert acts.shape == (3, N_TOKENS, 4 * D_MODEL)
    torch.testing.assert_close(acts, sae.encode(cache[f"{HOOK}.hook_sae_input"]), atol=1e-6, rtol=0)

    def clamp(t: torch.Tensor, hook) -> torch.Tensor:
        t[..., 7] = 5.0
        return t

    steered = model.run_with_hooks_with_saes(
        x, saes=[sae], use_error_term=True, fwd_hooks=[(f"{HOOK}.hook_sae_acts_post", clamp)]
    )

    def by_hand(t: torch.Tensor) -> torch.Tensor:  # decode(f') + (x - decode(f)), as in the paper's steering
        f = sae.encode(t)
        f_steered = f.clone()
        f_steered[..., 7] = 5.0
        return sae.decode(f_steered) + (t - sae.decode(f))

    torch.testing.assert_close(steered, substituted(model, x, HOOK, by_hand), atol=1e-5, rtol=0)
    assert (steered - model(x)).abs().max() > 1e-3


@torch.no_grad()
def test_add_and_reset_restore_original_hook_points(x) -> None:
    model = HookedSAEViT.from_open_clip(tiny_clip())  # fresh: no hook widths measured yet
    clean = model(x)
    original = model.blocks[0].hook_resid_post
    names = set(model.hook_dict)
    calls = []
    model.add_hook(HOOK, lambda t, hook: calls.append(1), is_permanent=True)
    sae = make_sae()
    model.add_sae(sae)
    assert calls == []  # measuring the hook's width did not fire user hooks
    assert model.blocks[0].hook_resid_post is not original
    assert HOOK not in model.hook_dict and f"{HOOK}.hook_sae_acts_post" in model.hook_dict
    assert model.acts_to_saes == {HOOK: sae}
    assert (model(x) - clean).abs().max() > 1e-2
    with pytest.raises(ValueError, match="hook_sae_output"):
        model.run_with_cache(x, names_filter=[HOOK])
    model.reset_saes()
    assert model.blocks[0].hook_resid_post is original and set(model.hook_dict) == names
    assert model.acts_to_saes == {}
    torch.testing.assert_close(model(x), clean, atol=0, rtol=0)
    assert calls == [1]  # the permanent hook came back with its hook point
    with pytest.raises(ValueError, match="no SAE is spliced"):
        model.reset_saes(HOOK)


@torch.no_grad()
def test_context_manager_cleans_up_and_restores_previous(model, x) -> None:
    original = model.blocks[0].hook_resid_post
    first, second = make_sae(seed=1), make_sae(seed=2)
    model.add_sae(first, tokens="cls")
    try:
        with model.saes(saes=[second, make_sae("topk", "blocks.1.hook_resid_post")]) as m:
            assert m is model and model.acts_to_saes[HOOK] is second
            assert set(model.acts_to_saes) == {HOOK, "blocks.1.hook_resid_post"}
        assert model.acts_to_saes == {HOOK: first}
        assert model.blocks[0].hook_resid_post.positions == [0]  # restored with its token mask
        with model.saes(saes=[second, make_sae(seed=3)]):  # two on one hook: the later one wins inside
            assert model.acts_to_saes[HOOK] is not second
        assert model.acts_to_saes == {HOOK: first}
        with pytest.raises(RuntimeError, match="boom"), model.saes(saes=second):
            raise RuntimeError("boom")
        assert model.acts_to_saes == {HOOK: first}
        model.run_with_saes(x, saes=[second], reset_saes_end=False)
        assert model.acts_to_saes == {HOOK: second}
    finally:
        model.reset_saes()
    assert model.blocks[0].hook_resid_post is original


# ------------------------------------------------------------------------------------------
# constructors


def test_constructors_return_hooked_sae_vit(monkeypatch, x) -> None:
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "sae-test-tiny", TINY)
    from_spec = HookedSAEViT.from_pretrained(SPEC)
    assert type(from_spec) is HookedSAEViT and from_spec.cfg.model_spec == SPEC

    from transformers import CLIPVisionConfig, CLIPVisionModel

    hf_cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    assert type(HookedSAEViT.from_hf(CLIPVisionModel(hf_cfg).eval())) is HookedSAEViT

    plain = HookedViT.from_open_clip(tiny_clip(seed=3))
    plain.set_use_attn_result(True)
    copy = HookedSAEViT.from_hooked_vit(plain)
    assert type(copy) is HookedSAEViT and copy.tl_cfg.use_attn_result
    with torch.no_grad():
        torch.testing.assert_close(copy(x), plain(x), atol=0, rtol=0)
        assert copy.W_proj.data_ptr() != plain.W_proj.data_ptr()
        sae = make_sae()
        torch.testing.assert_close(
            copy.run_with_saes(x, saes=sae), substituted(plain, x, HOOK, sae), atol=1e-6, rtol=0
        )


@torch.no_grad()
def test_sae_in_another_dtype_keeps_model_dtype(model, x) -> None:
    sae = make_sae().to(dtype=torch.float64)
    out, cache = model.run_with_cache_with_saes(
        x, saes=[sae], use_error_term=True, names_filter=["blocks.1.hook_resid_pre"]
    )
    assert cache["blocks.1.hook_resid_pre"].dtype == out.dtype == torch.float32
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------
# errors: sae_lens only warns, we refuse


ERROR_CASES = [
    ({"hook": "blocks.7.hook_resid_post"}, {}, "unknown hook"),
    ({"hook": "blocks.0.hook_resid_pots"}, {}, "did you mean"),
    ({"hook": "blocks.0.attn.hook_result"}, {}, r"set_use_attn_result\(True\)"),
    ({"d_in": 48}, {}, "d_in=48 .* 32 wide"),
    ({"hook": "blocks.0.mlp.hook_pre"}, {}, "d_in=32 .* 128 wide"),
    ({"model_name": "open_clip:ViT-B-32/datacomp_xl_s13b_b90k"}, {}, "check_model=False"),
    ({"image_size": 224}, {}, "image_size=224"),
    ({"patch_size": 16}, {}, "patch_size=16"),
    ({"n_tokens": 50}, {}, "n_tokens=50"),
    ({"token_selection": "cls", "context_size": 50}, {}, "context_size=50"),
    ({"context_size": 1}, {}, "pass tokens='cls'"),
    ({"token_selection": "cls_only"}, {}, "token_selection='cls_only'"),
    ({"weight_processing": {"fold_ln": False, "center_writing_weights": True}}, {}, "center_writing_weights"),
    ({}, {"tokens": [0, 40]}, r"out of range"),
    ({}, {"tokens": "first"}, "tokens must be one of"),
    ({"hook": "hook_patch_embed"}, {"tokens": "cls"}, "no token axis"),
    ({"hook_name_out": "blocks.1.hook_resid_pots"}, {}, "did you mean"),  # a transcoder's output hook
    ({"hook_name_out": "blocks.0.mlp.hook_pre"}, {}, r"writes 32 features per token .* \[batch, 17, 128\]"),
]


@pytest.mark.parametrize(("sae_kw", "add_kw", "message"), ERROR_CASES)
def test_bad_splices_raise(model, sae_kw, add_kw, message) -> None:
    sae = make_sae(**sae_kw)
    hooks_before = set(model.hook_dict)
    with pytest.raises(ValueError, match=message):
        model.add_sae(sae, **add_kw)
    with pytest.raises(ValueError, match=message):
        model.run_with_saes(torch.zeros(1, 3, 32, 32), saes=[sae], **add_kw)
    assert model.acts_to_saes == {} and set(model.hook_dict) == hooks_before


def test_missing_hook_name_raises(model) -> None:
    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=64))
    with pytest.raises(ValueError, match=r"metadata\.hook_name"):
        model.add_sae(sae)


@torch.no_grad()
def test_check_model_false_and_matching_metadata_splice(model, x) -> None:
    foreign = make_sae(model_name="open_clip:ViT-B-32/datacomp_xl_s13b_b90k")
    model.run_with_saes(x, saes=[foreign], check_model=False)
    matching = make_sae(
        model_name=SPEC,
        image_size=32,
        patch_size=8,
        n_tokens=N_TOKENS,
        token_selection="all",
        context_size=N_TOKENS,
    )
    torch.testing.assert_close(model.run_with_saes(x, saes=matching), substituted(model, x, HOOK, matching))
    pooled = make_sae(hook="hook_image_embed", d_in=16, token_selection="cls", context_size=1)
    torch.testing.assert_close(
        model.run_with_saes(x, saes=pooled), pooled(model(x)), atol=1e-6, rtol=0
    )  # a pooled vector has no token axis; cls is accepted as "the whole vector"


# ------------------------------------------------------------------------------------------
# transcoders: read one hook, write another (sae_lens' SkipTranscoder as the reference forward)

T_IN, T_OUT = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"


def make_skip_transcoder(seed: int = 0, **meta) -> SAE:
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig

    cfg = SkipTranscoderConfig(
        d_in=D_MODEL,
        d_sae=64,
        d_out=D_MODEL,
        apply_b_dec_to_input=False,
        metadata=SAEMetadata(hook_name=T_IN, hook_name_out=T_OUT, **meta),
    )
    sae = SkipTranscoder(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim == 1 else p.shape[-1] ** -0.5))
    return sae.eval()


@torch.no_grad()
def test_a_transcoder_splices_from_its_input_hook_to_its_output_hook(model, x) -> None:
    sae = make_skip_transcoder()
    torch.testing.assert_close(
        model.run_with_saes(x, saes=sae, use_error_term=True), model(x), atol=1e-5, rtol=0
    )
    # without the error term the output hook carries sae_lens' own forward of the input hook's activations
    _, cache = model.run_with_cache(x, names_filter=T_IN)
    by_hand = substituted(model, x, T_OUT, lambda t: sae(cache[T_IN]))
    spliced, spliced_cache = model.run_with_cache_with_saes(x, saes=sae, use_error_term=False)
    torch.testing.assert_close(spliced, by_hand, atol=1e-5, rtol=0)
    assert not torch.allclose(spliced, model(x), atol=1e-3)
    assert spliced_cache[f"{T_OUT}.hook_sae_acts_post"].shape == (3, N_TOKENS, 64)
    assert model.acts_to_saes == {} and T_OUT in model.hook_dict  # reset: the plain hooks are back
    assert not model.hook_dict[T_IN]._forward_hooks  # the input capture is gone too


@torch.no_grad()
def test_a_transcoder_survives_reset_hooks_and_steers_like_its_own_forward(model, x) -> None:
    from sae_clip_plugin.analysis.steering import steer

    sae = make_skip_transcoder(seed=1)
    model.add_sae(sae, use_error_term=True)
    try:
        model.reset_hooks()  # user hooks go; the transcoder's input capture is the splice's and stays
        _, spliced_cache = model.run_with_cache(x, names_filter=f"{T_OUT}.hook_sae_acts_post")
        assert spliced_cache[f"{T_OUT}.hook_sae_acts_post"].abs().sum() > 0
        with pytest.raises(
            ValueError, match=r"'blocks.0.hook_mlp_out' is already read or written by the SAE"
        ):
            model.add_sae(make_sae(hook=T_OUT))
    finally:
        model.reset_saes()
    _, cache = model.run_with_cache(x, names_filter=[T_IN, T_OUT])
    clean_out = cache[T_OUT]
    f = sae.encode(cache[T_IN])
    f_steered = f.clone()
    f_steered[..., 5] = 4.0
    # the edit moves the output hook by forward(f') - forward(f), computed from sae_lens' SkipTranscoder by hand
    delta = (f_steered - f) @ sae.W_dec
    expected = substituted(model, x, T_OUT, lambda t: clean_out + delta)
    with steer(model, sae, {5: 4.0}):
        steered = model(x)
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)
    spliced = model.run_with_hooks_with_saes(
        x, saes=sae, use_error_term=True,
        fwd_hooks=[(f"{T_OUT}.hook_sae_acts_post", lambda a, hook: a.index_fill(-1, torch.tensor([5]), 4.0))],
    )  # fmt: skip
    torch.testing.assert_close(spliced, expected, atol=1e-5, rtol=0)
