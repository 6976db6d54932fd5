"""Checks every loaded SAE passes, whatever its format: a usable k and finite weights.

Why: a cfg.json or Prisma config with k = 0 loaded and evaluated as "L0 0, 100% dead"; k < 0 or k > d_sae
failed only at first use ("selected index k out of range"); NaN weights loaded silently and spread through
every forward. Each is refused at load with the file and the fix named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def check_sae_values(cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str) -> None:
    """`cfg` (sae_lens config fields: d_sae, k) and `state` (name -> tensor) of the SAE read from `source`."""
    k, d_sae = cfg.get("k"), cfg.get("d_sae")
    if k is not None:
        integral = isinstance(k, int) or (isinstance(k, float) and k.is_integer())
        if isinstance(k, bool) or not isinstance(k, (int, float)) or k < 1 or (d_sae and k > d_sae):
            raise ValueError(
                f"{source}: k={k!r} active features per token, but a TopK SAE needs 1 <= k <= d_sae ({d_sae}); "
                "the config is corrupt or for another SAE: fix k in it (or re-download the file)"
            )
        if cfg.get("architecture") == "topk" and not integral:
            raise ValueError(f"{source}: k={k!r} is not a whole number of features; fix k in its config")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{source}: {bad} non-finite value(s) (NaN or inf) in {name}; the file is corrupt or its training "
                "diverged: re-download it or retrain (an earlier checkpoint may be finite)"
            )


def check_loaded_sae(sae: Any, source: str) -> None:
    """The same checks on a built sae_lens SAE."""
    cfg = {"k": getattr(sae.cfg, "k", None), "d_sae": sae.cfg.d_sae, "architecture": sae.cfg.architecture()}
    check_sae_values(cfg, dict(sae.state_dict()), source)
