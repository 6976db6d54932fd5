"""transformer_lens' ActivationCache methods on HookedViT caches, checked against hand computations.

The hand versions use only cached activations and the model's weights, written out here the way the
transformer_lens docs define each method, with CLIP's two differences: the stream starts after ln_pre
and the final norm is ln_post.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sae_clip_plugin import HookedViT
from tests.model.clips import tiny_hf_clip, tiny_open_clip

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5


def build(kind: str) -> HookedViT:
    if kind == "open_clip":
        return HookedViT.from_open_clip(tiny_open_clip(layers=3))
    if kind == "open_clip_folded":
        return HookedViT.from_open_clip(tiny_open_clip(layers=3), fold_ln=True, center_writing_weights=True)
    return HookedViT.from_hf(tiny_hf_clip())


@pytest.fixture(scope="module", params=["open_clip", "open_clip_folded", "hf"])
def run(request):
    model = build(request.param)
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, cache = model.run_with_cache(pixels)
    return model, cache


def centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def final_scale(model: HookedViT, cache) -> torch.Tensor:
    """ln_post's scale on every token of the final stream, by hand."""
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    return (centred(resid).pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()


def test_cache_is_a_transformer_lens_cache_with_clip_names(run) -> None:
    from transformer_lens.ActivationCache import ActivationCache

    model, cache = run
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])
    assert torch.equal(cache["resid_post", -1], cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])
    assert torch.equal(cache["scale", 2, "ln1"], cache["blocks.2.ln1.hook_scale"])
    # the final-norm shorthand reads ln_post; at CLS it is exactly the cached value
    assert torch.allclose(cache["scale"], final_scale(model, cache), atol=1e-6)
    cached = cache["ln_post.hook_scale"]
    assert torch.allclose(cache["scale"][:, 0], cached.reshape(cached.shape[0], -1)[:, :1], atol=1e-6)


def test_accumulated_resid_with_ln_post(run) -> None:
    model, cache = run
    stack, labels = cache.accumulated_resid(incl_mid=True, apply_ln=True, return_labels=True)
    n = model.cfg.n_layers
    assert labels == [x for layer in range(n) for x in (f"{layer}_pre", f"{layer}_mid")] + ["final_post"]
    hand = []
    for layer in range(n):
        hand += [cache[f"blocks.{layer}.hook_resid_pre"], cache[f"blocks.{layer}.hook_resid_mid"]]
    hand.append(cache[f"blocks.{n - 1}.hook_resid_post"])
    ln = model.ln_post
    w = getattr(ln, "w", None)
    b = getattr(ln, "b", None)
    expected = torch.stack([F.layer_norm(h, (model.cfg.d_model,), w, b, model.cfg.eps) for h in hand])
    assert torch.allclose(stack, expected, atol=ATOL)
    # the pooled token's last entry is what the model pools (then projects): the logit lens ends at the embedding
    pooled = expected[-1][:, 0]
    embed = pooled @ model.W_proj + model.b_proj
    assert torch.allclose(embed, cache["hook_image_embed"], atol=ATOL)


def test_accumulated_resid_at_a_middle_layer_uses_that_layers_ln1_scale(run) -> None:
    _, cache = run
    stack = cache.accumulated_resid(layer=2, apply_ln=True)
    hand = torch.stack(
        [cache["blocks.0.hook_resid_pre"], cache["blocks.1.hook_resid_pre"], cache["blocks.2.hook_resid_pre"]]
    )
    assert torch.allclose(stack, centred(hand) / cache["blocks.2.ln1.hook_scale"], atol=ATOL)


def test_decompose_resid_starts_after_ln_pre_and_sums_to_the_stream(run) -> None:
    model, cache = run
    stack, labels = cache.decompose_resid(return_labels=True)
    n = model.cfg.n_layers
    assert labels == ["embed"] + [x for layer in range(n) for x in (f"{layer}_attn_out", f"{layer}_mlp_out")]
    assert torch.equal(stack[0], cache["blocks.0.hook_resid_pre"])
    assert torch.equal(stack[1], cache["blocks.0.hook_attn_out"])
    assert torch.allclose(stack.sum(0), cache["resid_post", -1], atol=ATOL)
    # the cache itself is unchanged afterwards (hook_embed is still the pre-ln_pre embedding)
    assert not torch.equal(cache["hook_embed"], cache["blocks.0.hook_resid_pre"])
    with_ln = cache.decompose_resid(apply_ln=True, mode="attn", incl_embeds=False)
    hand = torch.stack([cache[f"blocks.{layer}.hook_attn_out"] for layer in range(n)])
    assert torch.allclose(with_ln, centred(hand) / final_scale(model, cache), atol=ATOL)
    mlp_input = cache.decompose_resid(layer=1, mlp_input=True)
    assert torch.allclose(mlp_input.sum(0), cache["blocks.1.hook_resid_mid"], atol=ATOL)


def head_results_by_hand(model: HookedViT, cache, layer: int) -> torch.Tensor:
    z = cache[f"blocks.{layer}.attn.hook_z"]  # [b, pos, head, d_head]
    return torch.einsum("bphe,hed->bphd", z, model.blocks[layer].attn.W_O)


def test_stack_head_results_and_compute_head_results(run) -> None:
    model, cache = run
    stack, labels = cache.stack_head_results(return_labels=True, incl_remainder=True)
    n, h = model.cfg.n_layers, model.cfg.n_heads
    assert labels == [f"L{layer}H{i}" for layer in range(n) for i in range(h)] + ["remainder"]
    hand = torch.cat(
        [head_results_by_hand(model, cache, layer) for layer in range(n)], dim=2
    )  # [b, pos, n*h, d]
    assert torch.allclose(stack[:-1], hand.permute(2, 0, 1, 3), atol=ATOL)
    for layer in range(n):  # heads + b_O make attn_out
        attn = head_results_by_hand(model, cache, layer).sum(2) + model.blocks[layer].attn.b_O
        assert torch.allclose(attn, cache[f"blocks.{layer}.hook_attn_out"], atol=ATOL)
    # compute_head_results gives what hook_result would have held
    model.set_use_attn_result(True)
    try:
        with torch.no_grad():
            _, with_result = model.run_with_cache(
                torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
            )
    finally:
        model.set_use_attn_result(False)
    cached = with_result["blocks.1.attn.hook_result"].clone()
    del with_result.cache_dict["blocks.0.attn.hook_result"]
    with_result.compute_head_results()
    assert torch.allclose(with_result["blocks.1.attn.hook_result"], cached, atol=ATOL)


def test_stack_neuron_results(run) -> None:
    model, cache = run
    stack, labels = cache.stack_neuron_results(layer=2, pos_slice=0, return_labels=True)
    d_mlp = model.cfg.d_mlp
    assert labels[:2] == ["L0N0", "L0N1"] and len(labels) == 2 * d_mlp
    post = cache["blocks.1.mlp.hook_post"][:, 0]  # [b, d_mlp]
    hand = post[:, :, None] * model.blocks[1].mlp.W_out  # [b, d_mlp, d_model]
    assert torch.allclose(stack[d_mlp:], hand.permute(1, 0, 2), atol=ATOL)
    mlp_out = hand.sum(1) + model.blocks[1].mlp.b_out
    assert torch.allclose(mlp_out, cache["blocks.1.hook_mlp_out"][:, 0], atol=ATOL)


def test_full_resid_decomposition_sums_to_the_stream_and_to_the_embedding(run) -> None:
    model, cache = run
    stack, labels = cache.get_full_resid_decomposition(return_labels=True)
    assert labels[-2:] == ["embed", "bias"] and "pos_embed" not in labels
    assert torch.allclose(stack.sum(0), cache["resid_post", -1], atol=ATOL)
    # apply_ln + projection: the CLS terms plus ln_post's bias through W_proj give the image embedding
    ln = model.ln_post
    w = getattr(ln, "w", torch.ones(model.cfg.d_model))
    b = getattr(ln, "b", torch.zeros(model.cfg.d_model))
    projected = cache.get_full_resid_decomposition(
        apply_ln=True, pos_slice=0, expand_neurons=False, project_output_onto=w[:, None] * model.W_proj
    )
    embed = projected.sum(0) + b @ model.W_proj + model.b_proj
    assert torch.allclose(embed, cache["hook_image_embed"], atol=ATOL)


def test_apply_ln_to_stack(run) -> None:
    model, cache = run
    stack = torch.stack([cache["blocks.1.hook_attn_out"], cache["blocks.1.hook_mlp_out"]])
    assert torch.allclose(
        cache.apply_ln_to_stack(stack, layer=2), centred(stack) / cache["blocks.2.ln1.hook_scale"], atol=ATOL
    )
    assert torch.allclose(
        cache.apply_ln_to_stack(stack, layer=1, mlp_input=True),
        centred(stack) / cache["blocks.1.ln2.hook_scale"],
        atol=ATOL,
    )
    assert torch.allclose(
        cache.apply_ln_to_stack(stack), centred(stack) / final_scale(model, cache), atol=ATOL
    )


def test_model_answers_what_the_cache_asks(run) -> None:
    model, _ = run
    assert model.cfg.attn_only is False
    assert model.cfg.normalization_type == ("LNPre" if model.cfg.fold_ln else "LN")
    assert model.cfg.device == torch.device("cpu")
    bias = model.accumulated_bias(2, mlp_input=True)
    hand = (
        sum(model.blocks[layer].attn.b_O + model.blocks[layer].mlp.b_out for layer in range(2))
        + model.blocks[2].attn.b_O
    )
    assert torch.allclose(bias, hand)
    assert "device" not in model.cfg.to_dict() and "attn_only" not in model.cfg.to_dict()
    with pytest.raises(ValueError, match="out of range"):
        model.accumulated_bias(model.cfg.n_layers, mlp_input=True)
