"""Activations CLIP needs that transformer_lens lacks, registered once in its table."""

from __future__ import annotations

import torch
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x) (open_clip's QuickGELU)."""
    return x * torch.sigmoid(1.702 * x)


def register_activations() -> None:
    """Idempotent: adding the same function twice is harmless, another one under the name is not."""
    existing = SUPPORTED_ACTIVATIONS.get("quick_gelu")
    if existing is None:
        SUPPORTED_ACTIVATIONS["quick_gelu"] = quick_gelu
    elif existing is not quick_gelu and getattr(existing, "__name__", "") != "quick_gelu":
        raise RuntimeError("transformer_lens already maps 'quick_gelu' to another function")
