"""Small random CLIPs shared by the model tests."""

from __future__ import annotations

import open_clip
import torch

TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}


def small_open_clip(
    name: str = "ViT-B-32", layers: int | None = 2, seed: int = 0, **vision_overrides
) -> torch.nn.Module:
    """A randomly initialised open_clip CLIP with a real config's image tower (cut to `layers`).

    The text tower is a tiny standard one, so configs whose text side is a hub model build offline.
    """
    torch.manual_seed(seed)
    cfg = open_clip.get_model_config(name)
    vision = {**cfg["vision_cfg"], **vision_overrides}
    if layers is not None:
        vision["layers"] = layers
    return open_clip.CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=vision,
        text_cfg=TINY_TEXT,
        quick_gelu=cfg.get("quick_gelu", False),
    ).eval()


def tiny_open_clip(layers: int = 2, seed: int = 0, **vision_overrides) -> torch.nn.Module:
    """A very small open_clip CLIP (64 px, patch 16: 17 tokens, width 64) for behaviour tests."""
    torch.manual_seed(seed)
    vision = {
        "image_size": 64,
        "patch_size": 16,
        "width": 64,
        "layers": layers,
        "head_width": 16,
        **vision_overrides,
    }
    return open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=TINY_TEXT).eval()


def tiny_hf_clip(seed: int = 0):
    """A very small transformers CLIPModel (64 px, patch 16, 3 layers): ln_post acts on the pooled CLS only."""
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64,
        patch_size=16, projection_dim=32,
    )  # fmt: skip
    text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    from transformers import CLIPModel

    return CLIPModel(cfg).eval()
