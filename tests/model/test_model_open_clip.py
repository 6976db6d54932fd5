"""HookedViT reproduces open_clip's image tower at every comparable point."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from sae_clip_plugin import HookedViT, UnsupportedModelError
from tests.model.clips import small_open_clip

ATOL = 1e-5


def resblock_outputs(clip: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """open_clip's own encode_image plus each resblock's output, captured with torch hooks."""
    outs: list[torch.Tensor] = []
    handles = [
        block.register_forward_hook(lambda _m, _i, o: outs.append(o.detach()))
        for block in clip.visual.transformer.resblocks
    ]
    try:
        with torch.no_grad():
            ref = clip.encode_image(x)
    finally:
        for h in handles:
            h.remove()
    if isinstance(ref, tuple):  # output_tokens=True towers return (pooled, tokens)
        ref = ref[0]
    return ref, outs


def assert_matches_open_clip(clip: torch.nn.Module, model: HookedViT, x: torch.Tensor) -> None:
    ref, block_outs = resblock_outputs(clip, x)
    with torch.no_grad():
        out, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    assert len(block_outs) == model.cfg.n_layers
    for layer, block_out in enumerate(block_outs):
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], block_out, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-B-32-quickgelu"])
def test_full_size_configs_match_encode_image(name: str) -> None:
    torch.manual_seed(0)
    clip = open_clip.create_model(name).eval()
    model = HookedViT.from_open_clip(clip)
    size = model.cfg.image_size
    assert model.cfg.act_fn == ("quick_gelu" if "quickgelu" in name else "gelu")
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    assert_matches_open_clip(clip, model, x)


def _vision_kind(name: str) -> str:
    v = open_clip.get_model_config(name)["vision_cfg"]
    if v.get("timm_model_name"):
        return "timm"
    if isinstance(v.get("layers"), (list, tuple)):
        return "resnet"
    if v.get("attentional_pool"):
        return "attn_pool"
    return "vit"


SUPPORTED = [n for n in open_clip.list_models() if _vision_kind(n) == "vit"]


def test_supported_list_covers_the_variants() -> None:
    """The reduced-depth sweep must include LayerScale, no_ln_pre, avg pooling and final LN after pool."""
    cfgs = {n: open_clip.get_model_config(n)["vision_cfg"] for n in SUPPORTED}
    assert any(c.get("ls_init_value") for c in cfgs.values())
    assert any(c.get("no_ln_pre") for c in cfgs.values())
    assert any(c.get("pool_type") == "avg" and c.get("final_ln_after_pool") for c in cfgs.values())
    assert len(SUPPORTED) > 30


@pytest.mark.parametrize("name", SUPPORTED)
def test_every_supported_config_at_reduced_depth(name: str) -> None:
    clip = small_open_clip(name, layers=2)
    if clip.visual.transformer.resblocks[0].ls_1.__class__.__name__ == "LayerScale":
        for block in clip.visual.transformer.resblocks:  # non-trivial gains so the fold is really tested
            block.ls_1.gamma.data.uniform_(0.5, 1.5)
            block.ls_2.gamma.data.uniform_(0.5, 1.5)
    model = HookedViT.from_open_clip(clip)
    size = model.cfg.image_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    assert_matches_open_clip(clip, model, x)


def test_pool_type_none_returns_all_tokens() -> None:
    clip = small_open_clip("ViT-B-32", layers=1, pool_type="none")
    model = HookedViT.from_open_clip(clip)
    x = torch.randn(1, 3, 224, 224)
    ref, _ = resblock_outputs(clip, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, atol=ATOL, rtol=0)
    assert ref.shape == (1, 50, clip.visual.output_dim)


@pytest.mark.parametrize("kind", ["timm", "resnet", "attn_pool"])
def test_unsupported_towers_fail_at_once(kind: str) -> None:
    name = {"timm": "vit_medium_patch16_gap_256", "resnet": "RN50", "attn_pool": "coca_ViT-B-32"}[kind]
    cfg = open_clip.get_model_config(name)
    if kind == "attn_pool":
        from open_clip.transformer import VisionTransformer

        v = cfg["vision_cfg"]
        tower = VisionTransformer(
            image_size=v["image_size"], patch_size=v["patch_size"], width=64, layers=1, heads=2, mlp_ratio=4,
            attentional_pool=True, attn_pooler_heads=2, attn_pooler_queries=4, output_dim=32,
        )  # fmt: skip
        source = tower
    else:
        source = small_open_clip(name, layers=None)
    with pytest.raises(UnsupportedModelError, match=r"(?i)not supported|supports"):
        HookedViT.from_open_clip(source)


def test_custom_blocks_are_refused() -> None:
    clip = small_open_clip("ViT-B-32", layers=1, qk_norm=True)
    with pytest.raises(UnsupportedModelError, match="custom transformer blocks"):
        HookedViT.from_open_clip(clip)


def test_model_by_name_and_tag_is_refused_offline_with_a_clear_error() -> None:
    with pytest.raises(Exception) as err:
        HookedViT.from_pretrained("open_clip:ViT-B-32/datacomp_xl_s13b_b90k")
    assert (
        "offline" in str(err.value).lower()
        or "connect" in str(err.value).lower()
        or "cache" in str(err.value).lower()
    )


def test_model_by_name_without_tag_builds_random(monkeypatch: pytest.MonkeyPatch) -> None:
    model = HookedViT.from_pretrained("open_clip:ViT-S-32")
    assert model.cfg.model_spec == "open_clip:ViT-S-32"
    assert model.cfg.source == "open_clip"
    assert model.text is not None


def test_quickgelu_tag_sets_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    """For name + tag, QuickGELU comes from open_clip's tag config even when the name lacks it."""
    from sae_clip_plugin.model import open_clip_convert

    seen = {}

    def fake_create_model(name, pretrained=None, force_quick_gelu=False, **kw):
        seen["force_quick_gelu"] = force_quick_gelu
        return small_open_clip(name, layers=1)

    monkeypatch.setattr(open_clip_convert.open_clip, "create_model", fake_create_model)
    monkeypatch.setattr(
        open_clip_convert, "check_open_clip_weights_reachable", lambda *a, **k: None
    )  # no weights
    open_clip_convert.create_open_clip("ViT-B-32", "openai")
    assert seen["force_quick_gelu"] is True
    open_clip_convert.create_open_clip("ViT-B-32", "datacomp_xl_s13b_b90k")
    assert seen["force_quick_gelu"] is False


def test_config_is_serialisable_and_complete(clip_pair) -> None:
    _, model = clip_pair
    data = json.loads(model.cfg.to_json())
    for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "act_fn", "image_size", "patch_size",
                "n_patches", "n_tokens", "d_embed", "model_spec", "fold_ln", "center_writing_weights"):  # fmt: skip
        assert key in data
    assert data["n_tokens"] == 50 and data["n_patches"] == 49 and data["d_head"] == 64
    assert type(model.cfg).from_dict(data) == model.cfg


def test_preprocess_matches_open_clip() -> None:
    from PIL import Image

    clip, _, preprocess = open_clip.create_model_and_transforms("ViT-S-32")
    model = HookedViT.from_open_clip(clip)
    img = Image.fromarray((torch.rand(300, 260, 3) * 255).byte().numpy())
    torch.testing.assert_close(model.preprocess(img), preprocess(img))


def test_uncached_pretrained_weights_offline_fail_at_once_naming_the_fix(monkeypatch, tmp_path):
    """#30: offline, open_clip retried for about a minute and then gave a generic download error; the check
    asks the hub probe first and names what to do. A cached file (open_clip's HF cache layout) passes."""
    import time

    from huggingface_hub import constants

    from sae_clip_plugin import HookedViT
    from sae_clip_plugin.model.open_clip_convert import check_open_clip_weights_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(
        ConnectionError, match=r"not cached on this machine .* HF_HUB_OFFLINE is set.*local weights"
    ):
        HookedViT.from_pretrained("open_clip:ViT-B-32/datacomp_xl_s13b_b90k")
    assert time.perf_counter() - start < 10
    # the same file in open_clip's place in the HF cache: no error (open_clip then loads it)
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "datacomp_xl_s13b_b90k")["hf_hub"].rstrip("/")
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)
    check_open_clip_weights_reachable("ViT-B-32", "datacomp_xl_s13b_b90k", cache_dir=str(tmp_path))
    check_open_clip_weights_reachable("toy-never-mind", None)  # no pretrained tag: nothing to download
