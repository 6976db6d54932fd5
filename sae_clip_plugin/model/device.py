"""Devices: where a model's weights live (the one helper every analysis uses to put its inputs there), and what
"auto" means."""

from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def resolve_device(device: str | None) -> str:
    """'auto' (or None / empty) -> 'cuda' when a GPU is visible, else 'cpu'; anything else as given."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"device {device!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    return device
