"""Prisma's "tanh-relu" SAEs as a sae_lens architecture: f = tanh(ReLU((x - b_dec) W_enc + b_enc)).

Why a class of our own: sae_lens has no bounded ReLU, and Prisma trains some SAEs with it
(`activation_fn_str="tanh-relu"` in vit_prisma.sae). Everything but the activation is sae_lens'
StandardSAE, so saving, loading, splicing and steering work unchanged; `register_tanh_relu()` adds the
architecture to sae_lens' registry once (sae_lens refuses a second registration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

from sae_clip_plugin.pretrained.prisma import TANH_RELU as ARCHITECTURE


@dataclass
class TanhReluSAEConfig(StandardSAEConfig):
    """A StandardSAE config whose architecture name selects :class:`TanhReluSAE`."""

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


class TanhReluSAE(StandardSAE):
    """StandardSAE with Prisma's tanh(ReLU(.)) activation."""

    def get_activation_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda pre: torch.tanh(torch.relu(pre))


def register_tanh_relu() -> None:
    """Make `SAE.load_from_disk` / `SAE.from_dict` know the architecture (idempotent)."""
    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, TanhReluSAE, TanhReluSAEConfig)


register_tanh_relu()  # importing the class makes saved tanh-relu SAEs loadable with SAE.load_from_disk
