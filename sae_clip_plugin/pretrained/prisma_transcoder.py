"""Prisma's transcoders as sae_lens architectures (TopK and ReLU): one hook in (`ln2.hook_normalized`), another out (`hook_mlp_out`).

Why a class of our own: ViT-Prisma's `Transcoder` (vit_prisma/sae/transcoder.py) computes, with its per-token
layer norm (x_n = (x - mu) / (std + eps), unbiased std, as sae_lens' "layer_norm")

    f   = TopK((x_n - b_dec) W_enc + b_enc)            (ReLU on the kept values)
    out = (f W_dec + b_dec_out + x W_skip^T) * std + mu (the skip path on the raw input, then de-normalised)

sae_lens' `Transcoder` / `SkipTranscoder` take ReLU or JumpReLU and do not de-normalise the output, so they
compute another function. This class is sae_lens' `Transcoder` (b_dec is the output bias there; the input-side
b_dec is folded into b_enc - b_dec W_enc, exactly) with TopK, the optional W_skip and Prisma's output.
`encode` / `decode` are Prisma's; `forward` is Prisma's forward (`decode_with_input`: the output for any features).
HookedSAEViT splices it from its input hook to its output hook, and `steer` edits its features there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.topk_sae import TopK
from sae_lens.saes.transcoder import Transcoder, TranscoderConfig
from torch import nn

ARCHITECTURE = "prisma_topk_transcoder"
RELU_ARCHITECTURE = "prisma_relu_transcoder"


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
        return self.decode_with_input(self.encode(x), x)

    def decode_with_input(self, feature_acts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Prisma's output for features f of input x: (f W_dec + b_dec_out + x W_skip^T) * std(x) + mean(x).

        `decode` alone is Prisma's partial decode; the skip path and the de-normalisation need x (its layer-norm
        statistics are taken from x here, so any features, e.g. steered ones, can be decoded)."""
        self.run_time_activation_norm_fn_in(x.to(self.dtype))  # sets the statistics of x
        out = self.decode(feature_acts)
        if self.cfg.with_skip:
            out = out + x.to(self.dtype) @ self.W_skip.T
        return self.run_time_activation_norm_fn_out(out)


@dataclass
class PrismaReluTranscoderConfig(TranscoderConfig):
    """TranscoderConfig + whether the file has a skip connection (ReLU: no k)."""

    with_skip: bool = True

    @classmethod
    def architecture(cls) -> str:
        return RELU_ARCHITECTURE

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "with_skip": self.with_skip}


class PrismaReluTranscoder(PrismaTranscoder):
    """Prisma's ReLU (L1-trained) transcoder: the same function with ReLU in place of TopK."""

    cfg: PrismaReluTranscoderConfig  # type: ignore[assignment]

    def get_activation_fn(self) -> Any:
        return nn.ReLU()


def register_prisma_transcoder() -> None:
    """Make `SAE.load_from_disk` / `SAE.from_dict` know the architectures (idempotent)."""
    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, PrismaTranscoder, PrismaTranscoderConfig)
    if RELU_ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(RELU_ARCHITECTURE, PrismaReluTranscoder, PrismaReluTranscoderConfig)


register_prisma_transcoder()
