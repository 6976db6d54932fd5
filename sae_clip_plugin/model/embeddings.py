"""CLIP's image embedding: patch convolution, class token and learned positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sae_clip_plugin.model.config import HookedViTConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (a bias-free conv) plus the class token.

    `W_E` keeps the conv layout [d_model, channels, patch, patch] so open_clip and HF weights copy
    over unchanged. Returns the patch tokens; the caller prepends the class token so that both
    pieces are visible to hooks.
    """

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.cfg = cfg
        p = cfg.patch_size
        self.W_E = nn.Parameter(torch.empty(cfg.d_model, cfg.n_channels, p, p, dtype=cfg.torch_dtype))
        self.class_embedding = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.torch_dtype))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(pixel_values, self.W_E, stride=self.cfg.patch_size)  # [batch, d_model, grid, grid]
        return x.flatten(2).transpose(1, 2)  # [batch, n_patches, d_model], row-major patches

    def class_tokens(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return self.class_embedding.to(like.dtype).view(1, 1, -1).expand(batch, 1, -1)


class PosEmbed(nn.Module):
    """Learned (or fixed sin-cos) absolute positions, one row per token."""

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.zeros(cfg.n_tokens, cfg.d_model, dtype=cfg.torch_dtype))

    def forward(self, batch: int) -> torch.Tensor:
        return self.W_pos.unsqueeze(0).expand(batch, -1, -1)
