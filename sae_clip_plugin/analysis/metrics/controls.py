"""The controls a vision-SAE measure is read against: a random SAE of the same shape, and the model's neurons.

Why: a score means something only beside what it gives without learning (a freshly initialised SAE of the same
class, width and k) and what the model's own basis at the hook gives (Pach et al. 2025, arXiv 2504.02821, sec. 4,
compare SAE features with neurons).
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import SAE


def random_sae_like(sae: SAE[Any], seed: int = 0) -> SAE[Any]:
    """A freshly initialised SAE of `sae`'s class and config (same d_in, d_sae, k, hook): sae_lens' own init."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        fresh = type(sae)(sae.cfg)
    finally:
        torch.random.set_rng_state(state)
    return fresh.to(sae.device, sae.dtype)


class NeuronBasis(torch.nn.Module):
    """The model's basis at a hook, shaped like an SAE: features relu(x_i) then relu(-x_i), so 2 * d_in features.

    Why split by sign: the measures read non-negative, mostly-zero codes (Moran's I counts the non-zero patches,
    the monosemanticity score min-max normalises); a neuron's two signs are two candidate concepts.
    """

    def __init__(self, d_in: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.d_in = d_in
        self.W_enc = torch.nn.Parameter(torch.cat([torch.eye(d_in), -torch.eye(d_in)], 1).to(dtype))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.relu(), (-x).relu()], -1)
