"""Pretrained vision SAEs through sae_lens: the Prisma release registry, the Prisma converter, saving/upload.

    from sae_clip_plugin.pretrained import register_pretrained_releases
    register_pretrained_releases()  # done by `import sae_clip_plugin`
    sae = sae_lens.SAE.from_pretrained("prisma-clip-vit-b-32-vanilla-x64", "blocks.9.hook_resid_post/l1_1e-05")

See registry.py for the release / sae_id scheme.
"""

from sae_clip_plugin.pretrained.prisma import (
    convert_prisma,
    load_prisma_sae,
    prisma_disk_loader,
    prisma_sae_config,
    read_prisma_checkpoint,
)
from sae_clip_plugin.pretrained.registry import (
    CELEBA_RELEASE,
    CLS_TOPK_RELEASE,
    VANILLA_RELEASE,
    list_pretrained,
    prisma_huggingface_loader,
    register_pretrained_releases,
)
from sae_clip_plugin.pretrained.saving import save_sae, upload_sae
from sae_clip_plugin.pretrained.unpickler import UnsafePickleError, restricted_torch_load

__all__ = [
    "CELEBA_RELEASE",
    "CLS_TOPK_RELEASE",
    "VANILLA_RELEASE",
    "UnsafePickleError",
    "convert_prisma",
    "list_pretrained",
    "load_prisma_sae",
    "prisma_disk_loader",
    "prisma_huggingface_loader",
    "prisma_sae_config",
    "read_prisma_checkpoint",
    "register_pretrained_releases",
    "restricted_torch_load",
    "save_sae",
    "upload_sae",
]
