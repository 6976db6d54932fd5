"""What is steered: SAE features, neurons or given directions, seen as coefficients times directions.

Every basis says, for activations x at its hook, what each feature's coefficient is and which
direction a change of that coefficient moves x along. Steering feature j from c to c' then adds
(c' - c) * scale * direction_j, which is exactly decode(f') - decode(f) for sae_lens' affine decoders
(scale is the per-token factor that an SAE's output normalisation applies). The fast steerability
path uses this; the naive path uses the same basis' hook from `steering`.
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import SAE

from sae_clip_plugin.analysis.steering.interventions import (
    HookFn,
    direction_hook,
    neuron_hook,
    sae_decode_pair,
    sae_feature_hook,
    sae_hook_name,
)


class Basis:
    """Coefficients and directions of the things steered at `hook_name` (subclasses fill in)."""

    kind = "basis"
    hook_name: str
    size: int

    def coefficients(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """[..., d] activations -> [..., len(idx)] current coefficients."""
        raise NotImplementedError

    def directions(self, idx: torch.Tensor) -> torch.Tensor:
        """[len(idx), d] directions moved along when a coefficient changes."""
        raise NotImplementedError

    def out_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-token factor on a coefficient change ([..., d]), None when it is 1."""
        return None

    def error(self, x: torch.Tensor) -> torch.Tensor | None:
        """x - reconstruction (SAEs only): removed when steering without the error term."""
        return None

    def hook(
        self, feature: int, value: float, *, mode: str, tokens: Any, use_error_term: bool, means: Any
    ) -> tuple[str, HookFn]:
        """The run_with_hooks hook that steers one feature (the naive path)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"basis": self.kind, "hook_name": self.hook_name, "dictionary_size": self.size}


class SAEBasis(Basis):
    """Features of a sae_lens SAE: coefficient = encode(x)[j], direction = W_dec[j] (decoder-norm rescaled)."""

    kind = "sae"

    def __init__(self, sae: SAE[Any], hook_name: str | None = None):
        self.sae = sae
        self.hook_name = sae_hook_name(sae, hook_name)
        self.size = sae.cfg.d_sae

    def coefficients(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x.to(self.sae.dtype))[..., idx.to(x.device)]

    def directions(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.sae.W_dec[idx.to(self.sae.W_dec.device)]
        if getattr(self.sae.cfg, "rescale_acts_by_decoder_norm", False):
            w = w / w.norm(dim=-1, keepdim=True)
        return w

    def out_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """The linear part of the SAE's output normalisation, measured as out(1) - out(0)."""
        sae, x = self.sae, x.to(self.sae.dtype)
        if sae.cfg.normalize_activations in ("none", "expected_average_only_in"):
            return None
        sae.run_time_activation_norm_fn_in(sae.reshape_fn_in(x))
        ones = sae.run_time_activation_norm_fn_out(torch.ones_like(x))
        sae.run_time_activation_norm_fn_in(sae.reshape_fn_in(x))
        zeros = sae.run_time_activation_norm_fn_out(torch.zeros_like(x))
        return ones - zeros

    def error(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.sae.dtype)
        return x - self.sae.decode(self.sae.encode(x))

    def hook(self, feature, value, *, mode, tokens, use_error_term, means):
        return sae_feature_hook(
            self.sae,
            {feature: value} if mode not in ("zero", "mean") else [feature],
            mode=mode,
            tokens=tokens,
            use_error_term=use_error_term,
            means=means,
            hook_name=self.hook_name,
        )

    @torch.no_grad()
    def check_affine(self, x: torch.Tensor, idx: torch.Tensor, tol: float = 1e-4) -> None:
        """Refuse an SAE whose decoder is not affine in the features (the fast path would be wrong)."""
        x = x.to(self.sae.dtype)
        change = torch.linspace(1.0, 3.0, len(idx), dtype=x.dtype, device=x.device)

        def edit(f: torch.Tensor) -> torch.Tensor:
            f = f.clone()
            f[..., idx.to(f.device)] += change
            return f

        recon, steered, _ = sae_decode_pair(self.sae, x, edit)
        expected = steered - recon
        got = change @ self.directions(idx).to(x.dtype)
        scale = self.out_scale(x)
        got = got if scale is None else got * scale
        err = (expected - got).abs().max().item()
        if err > tol * (1 + expected.abs().max().item()):
            raise NotImplementedError(
                f"{type(self.sae).__name__}'s decoder is not affine in its features (fast-path mismatch {err:.2e}); "
                "use method='naive' for this SAE"
            )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sae_class": type(self.sae).__name__}


class NeuronBasis(Basis):
    """Coordinates of the activation at `hook_name` (the paper's neuron baseline)."""

    kind = "neurons"

    def __init__(self, hook_name: str, size: int):
        self.hook_name, self.size = hook_name, size

    def coefficients(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return x[..., idx.to(x.device)]

    def directions(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.eye(self.size)[idx.cpu()]

    def hook(self, feature, value, *, mode, tokens, use_error_term, means):
        edits = {feature: value} if mode not in ("zero", "mean") else [feature]
        return neuron_hook(self.hook_name, edits, mode=mode, tokens=tokens, means=means)


class DirectionBasis(Basis):
    """Given directions u_j ([n, d]): coefficient = projection x.u_j / |u_j|^2."""

    kind = "directions"

    def __init__(self, hook_name: str, directions: torch.Tensor):
        if directions.ndim != 2:
            raise ValueError(f"directions must be [n_directions, d], got shape {tuple(directions.shape)}")
        self.hook_name, self.dirs, self.size = hook_name, directions.detach(), directions.shape[0]

    def coefficients(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        u = self.dirs[idx.to(self.dirs.device)].to(x.device, x.dtype)
        return x @ u.T / (u * u).sum(-1)

    def directions(self, idx: torch.Tensor) -> torch.Tensor:
        return self.dirs[idx.to(self.dirs.device)]

    def hook(self, feature, value, *, mode, tokens, use_error_term, means):
        if mode == "mean":
            raise ValueError("mode='mean' is not defined for directions")
        return direction_hook(self.hook_name, self.dirs[feature], value, mode=mode, tokens=tokens)


def make_basis(
    basis: SAE[Any] | torch.Tensor | None, hook_name: str | None, width: int | None = None
) -> Basis:
    """An SAE -> its features; None -> the neurons at hook_name; a [n, d] tensor -> those directions."""
    if isinstance(basis, SAE):
        return SAEBasis(basis, hook_name)
    if hook_name is None:
        raise ValueError(
            "steering neurons or directions needs hook_name=... (e.g. 'blocks.6.hook_resid_post')"
        )
    if basis is None:
        if width is None:
            raise ValueError("neuron basis needs the hook's width")
        return NeuronBasis(hook_name, width)
    if isinstance(basis, torch.Tensor):
        return DirectionBasis(hook_name, basis)
    raise TypeError(
        f"expected a sae_lens SAE, None (neurons) or a [n, d] tensor of directions, got {type(basis).__name__}"
    )
