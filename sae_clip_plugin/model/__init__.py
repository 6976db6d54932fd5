"""HookedViT and its converters (loaded on first use: see sae_clip_plugin._lazy)."""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "HookedSAEViT": "hooked_sae_vit",
    "HookedViT": "hooked_vit",
    "HookedViTConfig": "config",
    "UnsupportedModelError": "open_clip_convert",
    "quick_gelu": "activations",
    "register_activations": "activations",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
