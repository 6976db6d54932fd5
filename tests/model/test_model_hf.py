"""HookedViT reproduces transformers' CLIP image towers (gelu and quick_gelu)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

from sae_clip_plugin import HookedViT, UnsupportedModelError

ATOL = 1e-5


def vision_config(act: str) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=6, image_size=64,
        patch_size=16, projection_dim=48, hidden_act=act,
    )  # fmt: skip


def clip_model(act: str) -> CLIPModel:
    torch.manual_seed(0)
    text = CLIPTextConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, hidden_act=act
    )
    cfg = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision_config(act).to_dict(), projection_dim=48
    )
    return CLIPModel(cfg).eval()


def check_against_hf(
    vision_model: torch.nn.Module, projection: torch.nn.Module | None, model: HookedViT, batch: int = 2
) -> None:
    size = model.cfg.image_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = vision_model(pixel_values=x, output_hidden_states=True)
        expected = ref.pooler_output if projection is None else projection(ref.pooler_output)
        out, cache = model.run_with_cache(x)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], ref.hidden_states[0], atol=ATOL, rtol=0)
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(
            cache[f"blocks.{layer}.hook_resid_post"], ref.hidden_states[layer + 1], atol=ATOL, rtol=0
        )


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_clip_model_matches(act: str) -> None:
    hf = clip_model(act)
    model = HookedViT.from_hf(hf)
    assert model.cfg.act_fn == act and model.cfg.d_embed == 48 and model.cfg.source == "hf"
    check_against_hf(hf.vision_model, hf.visual_projection, model)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_vision_model_with_projection_matches(act: str) -> None:
    torch.manual_seed(1)
    hf = CLIPVisionModelWithProjection(vision_config(act)).eval()
    model = HookedViT.from_hf(hf)
    assert model.text is None
    check_against_hf(hf.vision_model, hf.visual_projection, model)


def test_vision_model_without_prefix_or_projection() -> None:
    torch.manual_seed(2)
    hf = CLIPVisionModel(vision_config("gelu")).eval()
    assert not any(k.startswith("vision_model.") for k in hf.state_dict())
    model = HookedViT.from_hf(hf)
    assert model.cfg.d_embed is None
    check_against_hf(hf, None, model)


def test_state_dicts_with_and_without_prefix_agree() -> None:
    hf = clip_model("quick_gelu")
    with_prefix = hf.state_dict()
    assert any(k.startswith("vision_model.") for k in with_prefix)
    without = {
        k.removeprefix("vision_model."): v for k, v in with_prefix.items() if not k.startswith("text_")
    }
    a = HookedViT.from_hf(with_prefix, config=hf.config)
    b = HookedViT.from_hf(without, config=hf.config.vision_config)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)
        torch.testing.assert_close(
            a(x), hf.visual_projection(hf.vision_model(pixel_values=x).pooler_output), atol=ATOL, rtol=0
        )


def test_hf_text_side_matches_hf_with_its_own_padding() -> None:
    """Our tokens (open_clip BPE, zero padded) give the text features HF gives for eos-padded input + mask."""
    hf = clip_model("gelu")
    model = HookedViT.from_hf(hf)
    texts = ["a photo of a dog", "a red square"]
    tokens = model.text.tokenize(texts)
    eot = tokens.argmax(dim=-1)
    mask = (torch.arange(tokens.shape[1])[None] <= eot[:, None]).long()
    hf_tokens = torch.where(mask.bool(), tokens, torch.full_like(tokens, hf.config.text_config.eos_token_id))
    with torch.no_grad():
        ref = hf.text_projection(hf.text_model(input_ids=hf_tokens, attention_mask=mask).pooler_output)
        torch.testing.assert_close(model.encode_text(texts), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(model.logit_scale, hf.logit_scale.exp().detach())


def test_not_a_clip_is_refused() -> None:
    with pytest.raises(UnsupportedModelError):
        HookedViT.from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="needs config"):
        HookedViT.from_hf({"a": torch.zeros(1)})


# The image towers the vision-SAE families hook (docs/pretrained_families.md), as their hub configs state them,
# cut to 2 blocks: width, heads, patch, image size, activation and projection are the real ones.
REAL_CONFIGS = {
    "openai/clip-vit-base-patch16 (ViSAEBench)": dict(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, image_size=224, patch_size=16,
        projection_dim=512, hidden_act="quick_gelu",
    ),
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K (CLIP-Scope)": dict(
        hidden_size=1024, intermediate_size=4096, num_attention_heads=16, image_size=224, patch_size=14,
        projection_dim=768, hidden_act="gelu",
    ),
    "openai/clip-vit-large-patch14-336 (sae-for-vlm)": dict(
        hidden_size=1024, intermediate_size=4096, num_attention_heads=16, image_size=336, patch_size=14,
        projection_dim=768, hidden_act="quick_gelu",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REAL_CONFIGS))
def test_the_families_hf_towers_convert_exactly(name: str) -> None:
    torch.manual_seed(3)
    config = CLIPVisionConfig(num_hidden_layers=2, **REAL_CONFIGS[name])
    hf = CLIPVisionModelWithProjection(config).eval()
    model = HookedViT.from_hf(hf)
    side = config.image_size // config.patch_size
    assert model.cfg.n_tokens == side * side + 1  # 197, 257, 577
    check_against_hf(hf.vision_model, hf.visual_projection, model, batch=1)
