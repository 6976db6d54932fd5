"""TopK SAEs that keep the k largest pre-activations AS THEY ARE (no ReLU): saev's TopK, CLIP-Scope.

Why a class of our own: sae_lens' TopK applies ReLU to the kept values (`topk_values.relu()` in
sae_lens.saes.topk_sae.TopK), so a kept negative pre-activation would become 0, while saev's `TopKActivation`
(`mask * x`) and clipscope's `TopKSAE.encode` (`scatter` of the raw top-k values) keep it. Everything else is
sae_lens' TopKSAE (decode, splicing, saving).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

ARCHITECTURE = "raw_topk"


def raw_topk(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def activation(pre: torch.Tensor) -> torch.Tensor:
        values, indices = torch.topk(pre, k=k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, values)

    return activation


@dataclass
class RawTopKSAEConfig(TopKSAEConfig):
    """A TopKSAE config whose architecture name selects :class:`RawTopKSAE`."""

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


class RawTopKSAE(TopKSAE):
    """TopKSAE whose kept values are the raw pre-activations (they may be negative)."""

    def get_activation_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return raw_topk(self.cfg.k)


def register_raw_topk() -> None:
    """Make `SAE.load_from_disk` / `SAE.from_dict` know the architecture (idempotent)."""
    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, RawTopKSAE, RawTopKSAEConfig)


register_raw_topk()
