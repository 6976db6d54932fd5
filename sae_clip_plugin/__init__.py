"""sae_clip_plugin: CLIP's vision transformer in the transformer_lens / sae_lens toolchain.

Importing registers, once and without network access, QuickGELU with transformer_lens and the
released vision SAEs with sae_lens (so `SAE.from_pretrained(release, sae_id)` finds them).
"""

from sae_clip_plugin.model import (
    HookedSAEViT,
    HookedViT,
    HookedViTConfig,
    UnsupportedModelError,
    register_activations,
)
from sae_clip_plugin.pretrained import (
    list_pretrained,
    load_prisma_sae,
    register_pretrained_releases,
    save_sae,
    upload_sae,
)

register_activations()
register_pretrained_releases()

__all__ = [
    "HookedSAEViT",
    "HookedViT",
    "HookedViTConfig",
    "UnsupportedModelError",
    "list_pretrained",
    "load_prisma_sae",
    "save_sae",
    "upload_sae",
]
__version__ = "0.1.0"
