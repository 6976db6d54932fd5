"""HookedViT and its converters."""

from sae_clip_plugin.model.activations import quick_gelu, register_activations
from sae_clip_plugin.model.config import HookedViTConfig
from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT
from sae_clip_plugin.model.hooked_vit import HookedViT
from sae_clip_plugin.model.open_clip_convert import UnsupportedModelError

__all__ = [
    "HookedSAEViT",
    "HookedViT",
    "HookedViTConfig",
    "UnsupportedModelError",
    "quick_gelu",
    "register_activations",
]
