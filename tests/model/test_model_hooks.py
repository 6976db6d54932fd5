"""Hooks behave as in transformer_lens, and every hook's edits reach the output."""

from __future__ import annotations

import pytest
import torch

from sae_clip_plugin import HookedViT
from sae_clip_plugin.model.hooked_vit import OPTIONAL_HOOKS
from tests.model.clips import tiny_open_clip


@pytest.fixture(scope="module")
def model() -> HookedViT:
    return HookedViT.from_open_clip(tiny_open_clip())


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def test_expected_hook_names_exist(model: HookedViT) -> None:
    names = set(model.hook_dict)
    per_block = [
        "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
        "ln1.hook_scale", "ln1.hook_normalized", "ln2.hook_scale", "ln2.hook_normalized",
        "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_attn_scores", "attn.hook_pattern",
        "mlp.hook_pre", "mlp.hook_post",
    ]  # fmt: skip
    for layer in range(2):
        for suffix in per_block:
            assert f"blocks.{layer}.{suffix}" in names
    extras = [
        "hook_patch_embed",
        "hook_embed",
        "hook_pos_embed",
        "ln_pre.hook_normalized",
        "ln_post.hook_normalized",
    ]
    assert set([*extras, "hook_pooled", "hook_image_embed"]) <= names


def test_no_hooks_changes_nothing(model: HookedViT, x: torch.Tensor) -> None:
    with torch.no_grad():
        clean = model(x)
        no_hooks = model.run_with_hooks(x, fwd_hooks=[])
        # identity hooks everywhere switch every component to its explicit transformer_lens path
        identity = model.run_with_hooks(x, fwd_hooks=[(lambda name: True, lambda t, hook: t)])
        cached, _ = model.run_with_cache(x)
    torch.testing.assert_close(no_hooks, clean, atol=0, rtol=0)
    torch.testing.assert_close(identity, clean, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached, clean, atol=1e-5, rtol=0)
    assert len(model.hook_dict[next(iter(model.hook_dict))]._forward_hooks) == 0  # hooks removed afterwards


def test_editing_any_hook_changes_the_output(x: torch.Tensor) -> None:
    model = HookedViT.from_open_clip(tiny_open_clip())
    for flag in ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in"):
        getattr(model, f"set_{flag}")(True)

    def perturb(t: torch.Tensor, hook) -> torch.Tensor:
        """Random per-element noise: a scale-and-shift edit would vanish in the next LayerNorm."""
        noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(0), dtype=t.dtype)
        return t + 0.5 * noise * (t.std() + 1e-3)

    with torch.no_grad():
        clean = model(x)
        unchanged = []
        for name in model.hook_dict:
            if name.endswith("hook_attn_in"):
                continue  # exclusive with split qkv input; checked below

            if not torch.allclose(model.run_with_hooks(x, fwd_hooks=[(name, perturb)]), clean, atol=1e-6):
                continue
            unchanged.append(name)
        model.set_use_split_qkv_input(False)
        model.set_use_attn_in(True)
        for layer in range(2):
            out = model.run_with_hooks(x, fwd_hooks=[(f"blocks.{layer}.hook_attn_in", perturb)])
            if torch.allclose(out, clean, atol=1e-6):
                unchanged.append(f"blocks.{layer}.hook_attn_in")
    assert unchanged == []


def test_inactive_optional_hooks_say_how_to_enable(model: HookedViT, x: torch.Tensor) -> None:
    for flag, suffixes in OPTIONAL_HOOKS.items():
        with pytest.raises(ValueError, match=f"set_{flag}"):
            model.run_with_hooks(x, fwd_hooks=[(f"blocks.0.{suffixes[0]}", lambda t, hook: t)])


def test_stop_at_layer_gives_same_activations_and_computes_nothing_beyond(
    model: HookedViT, x: torch.Tensor
) -> None:
    with torch.no_grad():
        _, full = model.run_with_cache(x)
        fired: list[str] = []
        resid, partial = model.run_with_cache(
            x, names_filter=["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern"], stop_at_layer=1
        )
        model.run_with_hooks(
            x, stop_at_layer=1, fwd_hooks=[(lambda n: n.startswith(("blocks.1", "ln_post", "hook_pooled", "hook_image")),
                                            lambda t, hook: fired.append(hook.name))],
        )  # fmt: skip
    assert fired == []
    torch.testing.assert_close(resid, full["blocks.0.hook_resid_post"], atol=1e-6, rtol=0)
    torch.testing.assert_close(
        partial["blocks.0.attn.hook_pattern"], full["blocks.0.attn.hook_pattern"], atol=1e-6, rtol=0
    )
    assert set(partial.keys()) == {"blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern"}


def test_start_at_layer_resumes_from_the_residual_stream(model: HookedViT, x: torch.Tensor) -> None:
    with torch.no_grad():
        clean, cache = model.run_with_cache(x, names_filter="blocks.1.hook_resid_pre")
        resumed = model(cache["blocks.1.hook_resid_pre"], start_at_layer=1)
    torch.testing.assert_close(resumed, clean, atol=0, rtol=0)


def test_cache_is_a_transformer_lens_activation_cache(model: HookedViT, x: torch.Tensor) -> None:
    from transformer_lens.ActivationCache import ActivationCache

    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("resid_post"))
    assert isinstance(cache, ActivationCache)
    assert cache["resid_post", 1].shape == (2, 17, model.cfg.d_model)  # transformer_lens shorthand


def test_hooks_context_manager(model: HookedViT, x: torch.Tensor) -> None:
    seen = []
    with (
        torch.no_grad(),
        model.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", lambda t, hook: seen.append(t.shape))]),
    ):
        model(x)
    model(x)
    assert seen == [torch.Size([2, 17, model.cfg.d_model])]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.randn(2, 3, 32, 32), r"\[batch, 3, 64, 64\]"),
        (torch.randn(2, 1, 64, 64), r"\[batch, 3, 64, 64\]"),
        (torch.randn(3, 64, 64), "add a batch dimension"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating point"),
    ],
)
def test_bad_images_are_refused(model: HookedViT, bad: torch.Tensor, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        model(bad)


def test_unknown_hook_names_are_refused(model: HookedViT, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"did you mean 'blocks\.1\.hook_resid_post'"):
        model.run_with_cache(x, names_filter=["blocks.1.hook_resid_psot"])
    with pytest.raises(ValueError, match="unknown hook"):
        model.run_with_cache(x, names_filter="blocks.7.hook_resid_post")
    with pytest.raises(ValueError, match="unknown hook"):
        model.run_with_hooks(x, fwd_hooks=[("blocks.0.hook_resid", lambda t, hook: t)])
    with pytest.raises(ValueError, match="unknown hook"):
        model.add_hook("nope", lambda t, hook: t)
    with pytest.raises(ValueError, match="out of range"):
        model(x, stop_at_layer=5)


@pytest.mark.parametrize(
    ("fold_ln", "center", "fold_v"),
    [(True, False, False), (False, True, False), (True, True, False), (True, True, True)],
)
def test_weight_processing_keeps_the_output(
    fold_ln: bool, center: bool, fold_v: bool, x: torch.Tensor
) -> None:
    clip = tiny_open_clip()
    raw = HookedViT.from_open_clip(clip)
    processed = HookedViT.from_open_clip(
        clip, fold_ln=fold_ln, center_writing_weights=center, fold_value_biases=fold_v
    )
    assert processed.cfg.weight_processing == {
        "fold_ln": fold_ln,
        "center_writing_weights": center,
        "fold_value_biases": fold_v,
    }
    assert not any(raw.cfg.weight_processing.values())
    with torch.no_grad():
        torch.testing.assert_close(processed(x), raw(x), atol=1e-5, rtol=1e-4)
        _, a = raw.run_with_cache(x, names_filter="blocks.1.hook_resid_post")
        _, b = processed.run_with_cache(x, names_filter="blocks.1.hook_resid_post")
    resid_same = torch.allclose(a["blocks.1.hook_resid_post"], b["blocks.1.hook_resid_post"], atol=1e-4)
    assert resid_same == (not center)  # fold_ln keeps residual values; centring changes them


def test_where_hooks_sit_and_how_far_to_run() -> None:
    from sae_clip_plugin.model.hooks import (
        first_layer,
        hook_layer,
        hook_type,
        on_residual_stream,
        stop_at_layer_for,
        stop_layer,
    )

    assert on_residual_stream("blocks.2.hook_mlp_out") and on_residual_stream("blocks.0.hook_resid_pre")
    assert not on_residual_stream("blocks.2.attn.hook_z") and not on_residual_stream("hook_embed")

    assert hook_layer("blocks.7.attn.hook_z") == 7 and hook_layer("ln_post.hook_scale") is None
    assert hook_type("blocks.7.mlp.hook_post") == "mlp.hook_post" and hook_type("hook_embed") == "hook_embed"
    assert [stop_layer(n) for n in ("hook_patch_embed", "ln_pre.hook_scale", "blocks.2.hook_resid_mid", "hook_pooled")] == [
        0, 0, 3, None
    ]  # fmt: skip
    assert stop_at_layer_for(["blocks.1.hook_resid_post", "blocks.4.attn.hook_q"]) == 5
    assert stop_at_layer_for(["blocks.1.hook_resid_post", "hook_image_embed"]) is None
    assert stop_at_layer_for([]) is None
    assert first_layer(["blocks.3.hook_resid_post", "blocks.1.mlp.hook_post"], 6) == 1
    assert first_layer(["hook_embed"], 6) == 0 and first_layer(["ln_post.hook_scale"], 6) == 6
    assert first_layer([], 6) == 6


def test_stop_at_layer_for_fires_every_hook_and_no_block_beyond() -> None:
    import torch

    from sae_clip_plugin import HookedViT
    from tests.model.clips import tiny_open_clip

    model = HookedViT.from_open_clip(tiny_open_clip(layers=3))
    names = ["hook_pos_embed", "blocks.1.attn.hook_pattern"]
    stop = model.stop_at_layer_for(names)
    assert stop == 2
    fired = []
    model.blocks[2].hook_resid_pre.add_hook(lambda x, hook: fired.append(hook.name))
    try:
        _, cache = model.run_with_cache(torch.randn(1, 3, 64, 64), names_filter=names, stop_at_layer=stop)
    finally:
        model.reset_hooks()
    assert set(cache.keys()) == set(names) and not fired
