"""Pretrained vision SAEs through sae_lens: the Prisma release registry, the Prisma converter, saving/upload.

    from sae_clip_plugin.pretrained import register_pretrained_releases
    register_pretrained_releases()  # done when sae_lens is imported after `import sae_clip_plugin`
    sae = sae_lens.SAE.from_pretrained("prisma-clip-vit-b-32-vanilla-x64", "blocks.9.hook_resid_post/l1_1e-05")

See registry.py for the release / sae_id scheme.
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "convert_prisma": "prisma",
    "load_prisma_sae": "prisma",
    "prisma_disk_loader": "prisma",
    "prisma_sae_config": "prisma",
    "read_prisma_checkpoint": "prisma",
    "CELEBA_RELEASE": "registry",
    "CLS_TOPK_RELEASE": "registry",
    "VANILLA_RELEASE": "registry",
    "list_pretrained": "registry",
    "prisma_huggingface_loader": "registry",
    "register_pretrained_releases": "registry",
    "save_sae": "saving",
    "upload_sae": "saving",
    "UnsafePickleError": "unpickler",
    "restricted_torch_load": "unpickler",
    "load_sae": "loading",
    "load_family_sae": "families",
    "fold_norm_stats": "families",
    "detect_family": "families",
    "load_saes": "loading",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
