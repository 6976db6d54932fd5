"""The vision evaluation run at every checkpoint: explained variance, L0 for CLS vs patches, dead features.

sae_lens calls its evaluator only when wandb logging is on, and its metrics know nothing of CLS vs
patch tokens, whose sparsity differs by layer (the paper's sparsity findings; arXiv 2504.08729). The sums
and definitions are `sae_clip_plugin.streaming_stats`' (explained variance with the eval set's own mean, in
float64), the same `sae-clip eval` uses, so the training log and the evaluation report agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sae_clip_plugin.streaming_stats import FeatureStats, ReconstructionStats


class _Group:
    """One token group's shared accumulators, and the three numbers the training log keeps of them."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        self.recon = ReconstructionStats(d_in)
        self.features = FeatureStats(d_sae)

    def add(self, x: torch.Tensor, recon: torch.Tensor, feats: torch.Tensor) -> None:
        """x, recon: [tokens, d_in]; feats: [tokens, d_sae]."""
        self.recon.add(x, recon)
        self.features.add(feats)

    def logged(self) -> dict[str, float]:
        """explained_variance, mse, l0; nothing for a group without tokens."""
        if self.recon.n == 0:
            return {}
        sums = self.recon.metrics()
        return {
            "explained_variance": sums["explained_variance"],
            "mse": sums["mse"],
            "l0": self.features.metrics()["l0"],
        }


@torch.no_grad()
def evaluate_on_activations(
    sae: Any,
    acts: torch.Tensor,
    token_kinds: Sequence[str] | None = None,
    activation_scaler: Any = None,
    batch_images: int = 64,
) -> dict[str, Any]:
    """Metrics of `sae` on activations [images, context_size, d_in] in the model's own units.

    `token_kinds[t]` is 'cls' or 'patch' for position t (HookGeometry.token_kinds); per-kind metrics
    are reported for the kinds present. `activation_scaler` (a sae_lens ActivationScaler from
    training) maps inputs into the SAE's units and reconstructions back.
    """
    n_images, context_size, d_in = acts.shape
    kinds = list(token_kinds) if token_kinds is not None else ["token"] * context_size
    if len(kinds) != context_size:
        raise ValueError(f"got {len(kinds)} token kinds for a context of {context_size} tokens")
    groups = {kind: [t for t, k in enumerate(kinds) if k == kind] for kind in dict.fromkeys(kinds)}
    d_sae = int(sae.cfg.d_sae)
    overall, per_kind = _Group(d_in, d_sae), {kind: _Group(d_in, d_sae) for kind in groups}
    was_training = sae.training
    sae.eval()
    try:
        device = next(sae.parameters()).device
        dtype = next(sae.parameters()).dtype
        for start in range(0, n_images, batch_images):
            x = acts[start : start + batch_images].to(device)
            flat = x.reshape(-1, d_in)
            sae_in = activation_scaler.scale(flat) if activation_scaler is not None else flat
            feats = sae.encode(sae_in.to(dtype))
            recon = sae.decode(feats).to(flat.dtype)
            if activation_scaler is not None:
                recon = activation_scaler.unscale(recon)
            overall.add(flat, recon, feats)
            b = x.shape[0]
            feats3, recon3 = feats.reshape(b, context_size, -1), recon.reshape(b, context_size, d_in)
            for kind, positions in groups.items():
                idx = torch.tensor(positions, device=device)
                per_kind[kind].add(
                    x.index_select(1, idx).reshape(-1, d_in),
                    recon3.index_select(1, idx).reshape(-1, d_in),
                    feats3.index_select(1, idx).reshape(-1, feats.shape[-1]),
                )
    finally:
        sae.train(was_training)
    out: dict[str, Any] = overall.logged()
    label = {"cls": "cls", "patch": "patches", "token": "tokens"}
    if len(groups) > 1 or "token" not in groups:
        for kind, group in per_kind.items():
            for key, value in group.logged().items():
                out[f"{key}_{label.get(kind, kind)}"] = value
    out.update(
        dead_fraction_eval=overall.features.dead_fraction(),
        dead_window_eval_tokens=n_images * context_size,
        n_eval_images=n_images,
        d_sae=d_sae,
    )
    return out
