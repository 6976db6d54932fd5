"""Where a model's weights live: the one helper every analysis uses to put its inputs there."""

from __future__ import annotations

from typing import Any

import torch


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
