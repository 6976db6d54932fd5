"""The vision evaluation run at every checkpoint: explained variance, L0 for CLS vs patches, dead features.

sae_lens calls its evaluator only when wandb logging is on, and its metrics know nothing of CLS vs
patch tokens, whose sparsity differs by layer (the paper's sparsity findings; arXiv 2504.08729). Explained variance is
1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 with the eval set's own mean, accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class _Moments:
    """Streaming sums for explained variance and L0 over a group of tokens."""

    def __init__(self, d_in: int) -> None:
        self.n = 0
        self.sum = torch.zeros(d_in, dtype=torch.float64)
        self.sum_sq = 0.0
        self.sse = 0.0
        self.active = 0.0

    def add(self, x: torch.Tensor, recon: torch.Tensor, feats: torch.Tensor) -> None:
        x64 = x.double()
        self.n += x.shape[0]
        self.sum += x64.sum(0).cpu()
        self.sum_sq += float(x64.pow(2).sum())
        self.sse += float((x64 - recon.double()).pow(2).sum())
        self.active += float((feats != 0).sum())

    def result(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        total_var = self.sum_sq - float(self.sum.pow(2).sum()) / self.n  # sum ||x - mean||^2
        return {
            "explained_variance": 1.0 - self.sse / total_var if total_var > 0 else float("nan"),
            "mse": self.sse / self.n,
            "l0": self.active / self.n,
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
    overall, per_kind = _Moments(d_in), {kind: _Moments(d_in) for kind in groups}
    fired = None
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
            fired_now = (feats != 0).any(0)
            fired = fired_now if fired is None else fired | fired_now
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
    out: dict[str, Any] = dict(overall.result())
    label = {"cls": "cls", "patch": "patches", "token": "tokens"}
    if len(groups) > 1 or "token" not in groups:
        for kind, moments in per_kind.items():
            for key, value in moments.result().items():
                out[f"{key}_{label.get(kind, kind)}"] = value
    d_sae = int(fired.shape[0]) if fired is not None else 0
    out.update(
        dead_fraction_eval=float((~fired).float().mean()) if fired is not None else float("nan"),
        dead_window_eval_tokens=n_images * context_size,
        n_eval_images=n_images,
        d_sae=d_sae,
    )
    return out
