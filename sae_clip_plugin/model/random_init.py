"""A randomly initialised image tower of the same architecture (the control of the paper's steerability measures).

The text tower is kept (shared, not copied), so the readout vocabulary embeddings are the trained
model's and only the image side is random. Initialisation follows open_clip's VisionTransformer:
class/position embeddings and the projection N(0, width^-1/2), attention in-projections
Xavier-uniform with zero biases, the patch conv, attention out-projection and MLP matrices and MLP
biases torch's default U(+-1/sqrt(fan_in)), LayerNorm weights 1 and biases 0.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sae_clip_plugin.model.hooked_vit import HookedViT


def _fan_in(leaf: str, shape: torch.Size, cfg: Any) -> int:
    """Fan-in of the torch layer a HookedViT parameter came from."""
    if leaf == "W_E":  # conv [out, in, k, k]
        return shape[1] * shape[2] * shape[3]
    if leaf == "W_O":  # [heads, d_head, d_model]
        return shape[0] * shape[1]
    if leaf == "W_in" or leaf == "b_in":
        return cfg.d_model
    if leaf == "W_out" or leaf == "b_out":
        return cfg.d_mlp
    raise KeyError(leaf)


def _random_value(name: str, p: torch.Tensor, cfg: Any, gen: torch.Generator) -> torch.Tensor:
    leaf, shape, width = name.rsplit(".", 1)[-1], p.shape, cfg.d_model
    if leaf == "w" and p.ndim == 1:  # LayerNorm weight
        return torch.ones(shape)
    if leaf in ("class_embedding", "W_pos", "W_proj"):
        return torch.randn(shape, generator=gen) * width**-0.5
    if leaf in ("W_Q", "W_K", "W_V"):  # slices of one Xavier-uniform [3 * width, width] in-projection
        bound = math.sqrt(6.0 / (4 * width))
        return torch.empty(shape).uniform_(-bound, bound, generator=gen)
    if leaf in ("W_E", "W_O", "W_in", "W_out", "b_in", "b_out"):
        bound = 1.0 / math.sqrt(_fan_in(leaf, shape, cfg))
        return torch.empty(shape).uniform_(-bound, bound, generator=gen)
    if leaf.startswith("b"):  # LayerNorm, attention and projection biases
        return torch.zeros(shape)
    raise ValueError(f"random_vision_model does not know how to initialise parameter {name!r}")


@torch.no_grad()
def random_vision_model(model: HookedViT, seed: int = 0) -> HookedViT:
    """A copy of `model` (same class and config) whose image-tower weights are freshly initialised."""
    text = model.text
    model.text = None
    try:
        clone = copy.deepcopy(model)
    finally:
        model.text = text
    clone.text = text
    gen = torch.Generator().manual_seed(seed)
    for name, p in clone.named_parameters():
        if not name.startswith("text."):
            p.copy_(_random_value(name, p, clone.cfg, gen).to(p.dtype))
    if clone.cfg.model_spec:
        clone.cfg.model_spec = f"random:{clone.cfg.model_spec}"
    return clone.eval()
