"""Prisma's transcoders as a sae_lens architecture: one hook in (`ln2.hook_normalized`), another out (`hook_mlp_out`).

Why a class of our own: ViT-Prisma's `Transcoder` (vit_prisma/sae/transcoder.py) computes, with its per-token
layer norm (x_n = (x - mu) / (std + eps), unbiased std, as sae_lens' "layer_norm")

    f   = TopK((x_n - b_dec) W_enc + b_enc)            (ReLU on the kept values)
    out = (f W_dec + b_dec_out + x W_skip^T) * std + mu (the skip path on the raw input, then de-normalised)

sae_lens' `Transcoder` / `SkipTranscoder` take ReLU or JumpReLU and do not de-normalise the output, so they
compute another function. This class is sae_lens' `Transcoder` (b_dec is the output bias there; the input-side
b_dec is folded into b_enc - b_dec W_enc, exactly) with TopK, the optional W_skip and Prisma's output.
`encode` / `decode` are Prisma's; `forward` is Prisma's forward. HookedSAEViT splices same-hook SAEs only: use a
transcoder through its `encode` / `forward` in your own hooks (run_with_hooks) for now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.topk_sae import TopK
from sae_lens.saes.transcoder import Transcoder, TranscoderConfig
from torch import nn

ARCHITECTURE = "prisma_topk_transcoder"


@dataclass
class PrismaTranscoderConfig(TranscoderConfig):
    """TranscoderConfig + TopK's k and whether the file has a skip connection."""

    k: int = 64
    with_skip: bool = True

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "k": self.k, "with_skip": self.with_skip}


class PrismaTranscoder(Transcoder):
    """Prisma's TopK (skip) transcoder; see the module docstring for the function it computes."""

    cfg: PrismaTranscoderConfig  # type: ignore[assignment]

    def initialize_weights(self) -> None:
        super().initialize_weights()
        if self.cfg.with_skip:
            self.W_skip = nn.Parameter(
                torch.zeros(self.cfg.d_out, self.cfg.d_in, dtype=self.dtype, device=self.device)
            )

    def get_activation_fn(self) -> Any:
        return TopK(self.cfg.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))  # encode keeps the layer-norm statistics of x
        if self.cfg.with_skip:
            out = out + x.to(self.dtype) @ self.W_skip.T
        return self.run_time_activation_norm_fn_out(out)


def register_prisma_transcoder() -> None:
    """Make `SAE.load_from_disk` / `SAE.from_dict` know the architecture (idempotent)."""
    from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class

    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, PrismaTranscoder, PrismaTranscoderConfig)


register_prisma_transcoder()
