"""Steering hooks: edit SAE features, neurons or arbitrary directions at a hook, at chosen tokens.

Every factory returns a `(hook_name, fn)` pair for transformer_lens' `run_with_hooks(fwd_hooks=[...])`
or `model.hooks([...])`. SAE edits keep the SAE's error term by default, as the paper does
(the paper's steerability metric; arXiv 2504.08729): the edited activation is `x + decode(f') - decode(f)`, so an edit that changes
nothing is a no-op and the reconstruction error is not thrown away.

    with steer(model, sae, {123: 150.0}):                     # clamp feature 123 to 150 on all tokens
        embedding = model(pixels)
    model.run_with_hooks(pixels, fwd_hooks=[neuron_hook("blocks.3.hook_resid_post", {7: 0.0}, tokens="cls")])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import torch
from sae_lens import SAE
from transformer_lens.hook_points import HookPoint

from sae_clip_plugin.model.sae_splice import centres_input, sae_output, token_means, transcoder_output_hook
from sae_clip_plugin.model.tokens import TokenSelection

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

Mode = Literal["set", "add", "scale", "zero", "mean"]
MODES: tuple[str, ...] = ("set", "add", "scale", "zero", "mean")
Tokens = str | Sequence[int]
Edits = Mapping[int, float] | Sequence[int]
HookFn = Callable[[torch.Tensor, HookPoint], torch.Tensor]


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def apply_mode(
    current: torch.Tensor,
    mode: str,
    value: torch.Tensor | float | None,
    mean: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """The edited coefficient: set (clamp) to value, add value, scale by value, zero, or the mean."""
    if mode == "set":
        return torch.zeros_like(current) + value
    if mode == "add":
        return current + value
    if mode == "scale":
        return current * value
    if mode == "zero":
        return torch.zeros_like(current)
    if mode == "mean":
        if mean is None:
            raise ValueError(
                "mode='mean' needs the features' mean activations: pass means=... (see feature_means)"
            )
        return torch.zeros_like(current) + mean
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def normalise_edits(edits: Edits, mode: str) -> tuple[list[int], list[float]]:
    """{index: value} or [indices] (for zero / mean ablation) -> parallel lists."""
    check_mode(mode)
    if isinstance(edits, Mapping):
        indices, values = [int(k) for k in edits], [float(v) for v in edits.values()]
    else:
        if mode not in ("zero", "mean"):
            raise ValueError(f"mode={mode!r} needs a value per feature: pass {{feature: value}}, not a list")
        indices = [int(k) for k in edits]
        values = [0.0] * len(indices)
    if not indices:
        raise ValueError("no features to edit: pass at least one {feature: value}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"a feature is edited twice in {indices}")
    bad = {i: v for i, v in zip(indices, values, strict=True) if not math.isfinite(v)}
    if bad:
        raise ValueError(f"steering values must be finite numbers, got {bad}; pass a finite strength")
    return indices, values


def token_mask(tokens: Tokens, activation: torch.Tensor) -> torch.Tensor | None:
    """Bool mask over the token axis (dim 1) of `activation`, or None for every token."""
    if activation.ndim < 3:  # no token axis (pooled / embedding hooks)
        if tokens != "all":
            raise ValueError(
                f"this hook's activation has shape {tuple(activation.shape)} with no token axis, so tokens={tokens!r} "
                "cannot be selected; pass tokens='all'"
            )
        return None
    return TokenSelection.parse(tokens).mask(activation.shape[1], activation.device)


def _masked(new: torch.Tensor, old: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`new` at the selected tokens, `old` elsewhere (mask over dim 1)."""
    if mask is None:
        return new
    shape = [1, mask.shape[0]] + [1] * (new.ndim - 2)
    return torch.where(mask.view(shape), new, old)


def _as_tensor(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------------------------------------
# SAE features


def sae_hook_name(sae: SAE[Any], hook_name: str | None = None) -> str:
    """The hook the SAE reads (for a transcoder: its input hook; it writes `transcoder_output_hook(sae)`)."""
    name = hook_name or sae.cfg.metadata.hook_name
    if not name:
        raise ValueError("the SAE has no metadata.hook_name; pass hook_name=... (the hook it was trained on)")
    return name


def sae_decode_pair(sae: SAE[Any], x: torch.Tensor, edit: Callable[[torch.Tensor], torch.Tensor]) -> tuple:
    """(decode(f), decode(edit(f)), f) for x, handling SAEs whose decode reuses encode's normalisation state.

    sae_lens' layer_norm / constant_norm_rescale SAEs store the input's scale in encode and drop it in
    decode, so each decode needs the state re-set first (cheap: the normalisation only).
    """
    shift = token_means(x) if centres_input(sae) else None  # see model.sae_splice.centres_input
    if shift is not None:
        x = x - shift
    f = sae.encode(x)
    recon = sae.decode(f)
    sae.run_time_activation_norm_fn_in(sae.reshape_fn_in(x.to(sae.dtype)))
    steered = sae.decode(edit(f))
    if shift is not None:
        recon, steered = recon + shift, steered + shift
    return recon, steered, f


def _feature_edit(sae: SAE[Any], edits: Edits, mode: str, means: torch.Tensor | None) -> Callable:
    """f -> f with the chosen features edited (checked against d_sae)."""
    indices, values = normalise_edits(edits, mode)
    bad = [i for i in indices if not 0 <= i < sae.cfg.d_sae]
    if bad:
        raise ValueError(f"features {bad} are out of range for an SAE with d_sae={sae.cfg.d_sae}")

    def edit(f: torch.Tensor) -> torch.Tensor:
        f = f.clone()
        idx = torch.as_tensor(indices, device=f.device)
        mean = None if means is None else means.to(f.device, f.dtype)[idx]
        f[..., idx] = apply_mode(f[..., idx], mode, _as_tensor(values, f), mean)
        return f

    return edit


def sae_feature_hook(
    sae: SAE[Any],
    edits: Edits,
    *,
    mode: str = "set",
    tokens: Tokens = "all",
    use_error_term: bool = True,
    means: torch.Tensor | None = None,
    hook_name: str | None = None,
) -> tuple[str, HookFn]:
    """Edit SAE features at the SAE's hook: `{feature: value}` with mode set / add / scale, or a list with
    mode zero / mean (`means`: [d_sae] mean activations, see `feature_means`).

    With the error term (default) the hook returns x + decode(f') - decode(f) at the selected tokens;
    without it, decode(f'). Unselected tokens pass through untouched. A transcoder needs two hooks (it reads one
    and writes another): use `sae_feature_hooks`.
    """
    output_hook = transcoder_output_hook(sae)
    if output_hook and hook_name is None:
        # a transcoder's decode belongs at another hook: editing at its input hook would be silently wrong
        raise ValueError(
            f"this is a transcoder ({sae.cfg.metadata.hook_name} -> {output_hook}): it needs a hook at each end; "
            "use sae_feature_hooks(...) (a list of hooks) or steer(...)"
        )
    edit = _feature_edit(sae, edits, mode, means)
    name = sae_hook_name(sae, hook_name)

    def hook(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        if activation.shape[-1] != sae.cfg.d_in and sae.cfg.reshape_activations != "hook_z":
            raise ValueError(
                f"the SAE has d_in={sae.cfg.d_in} but {name} is {activation.shape[-1]} wide; steer it at a hook of its "
                f"width (its own hook is {sae.cfg.metadata.get('hook_name')!r})"
            )
        recon, steered, _ = sae_decode_pair(sae, activation, edit)
        x = activation.to(recon.dtype)
        new = x + (steered - recon) if use_error_term else steered
        return _masked(new, x, token_mask(tokens, activation)).to(activation.dtype)

    return name, hook


def sae_feature_hooks(
    sae: SAE[Any],
    edits: Edits,
    *,
    mode: str = "set",
    tokens: Tokens = "all",
    use_error_term: bool = True,
    means: torch.Tensor | None = None,
    hook_name: str | None = None,
) -> list[tuple[str, HookFn]]:
    """`sae_feature_hook` for SAEs and transcoders alike: the hooks to pass to run_with_hooks / model.hooks
    (`hook_name` moves an SAE's edit to another hook of its width).

    For a transcoder (metadata hook_name -> hook_name_out) the first hook records its input, the second adds
    out(f') - out(f) at the output hook (with the error term), or writes out(f') (without), where out is the
    transcoder's own forward from features (`sae_output`: Prisma's skip path and de-normalisation included).
    """
    output_hook = transcoder_output_hook(sae)
    if output_hook is None or hook_name is not None:
        return [
            sae_feature_hook(
                sae,
                edits,
                mode=mode,
                tokens=tokens,
                use_error_term=use_error_term,
                means=means,
                hook_name=hook_name,
            )
        ]
    edit = _feature_edit(sae, edits, mode, means)
    seen: list[torch.Tensor] = []

    def record(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        seen[:] = [activation]
        return activation

    def write(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        if not seen:
            raise RuntimeError(f"{sae.cfg.metadata.hook_name} did not fire before {output_hook} in this pass")
        sae_input = seen.pop()
        with torch.no_grad():
            f = sae.encode(sae_input)
            steered = sae_output(sae, edit(f), sae_input)
            recon = sae_output(sae, f, sae_input) if use_error_term else None
        x = activation.to(steered.dtype)
        new = x + (steered - recon) if recon is not None else steered
        return _masked(new, x, token_mask(tokens, activation)).to(activation.dtype)

    return [(sae_hook_name(sae), record), (output_hook, write)]


@contextmanager
def steer(
    model: HookedViT,
    sae: SAE[Any],
    edits: Edits,
    *,
    tokens: Tokens = "all",
    mode: str = "set",
    use_error_term: bool = True,
    means: torch.Tensor | None = None,
    hook_name: str | None = None,
    images: Any = None,
) -> Iterator[Any]:
    """`with steer(model, sae, {feature: value}): model(pixels)` runs with the features edited (SAEs and
    transcoders; `hook_name` moves an SAE's edit to another hook of its width).

    A value may be a strength relative to the model, `"relative:r"`: the feature is set to r x the typical norm of
    the SAE's input at the steered tokens / the length of its decoder row, measured on `images` (needed then).
    The paper steers at s = 150 on ViT-B/32 SAEs (arXiv 2504.08729, section 3), which is r = 5.41
    (`PAPER_RELATIVE_STRENGTH`); the same r carries over to other models, an absolute 150 does not
    (`relative_strengths` returns the absolute values; analysis/steering/strength.py says how they are defined).

        with steer(model, sae, {7: "relative:5.41"}, images=pixels):
            logits = model.zero_shot_logits(model(pixels), weights)
    """
    edits = _absolute(model, sae, edits, images, tokens)
    hooks = sae_feature_hooks(
        sae, edits, mode=mode, tokens=tokens, use_error_term=use_error_term, means=means, hook_name=hook_name
    )
    with model.hooks(fwd_hooks=hooks) as hooked:
        yield hooked


def _absolute(model: HookedViT, sae: SAE[Any], edits: Edits, images: Any, tokens: Tokens) -> Edits:
    """`edits` with every "relative:r" value replaced by its absolute strength (measured on `images`)."""
    # here, not at module level: strength.py imports this module (cycle)
    from sae_clip_plugin.analysis.steering.strength import parse_relative, relative_strengths

    if not isinstance(edits, Mapping):
        return edits
    relative = {f: r for f, v in edits.items() if (r := parse_relative(v)) is not None}
    if not relative:
        return edits
    if images is None:
        raise ValueError(
            "relative strengths are measured on images: pass images=<pixels or PIL images> (the ones you steer)"
        )
    absolute = relative_strengths(model, sae, images, relative, tokens=tokens)
    return {f: absolute.get(f, v) for f, v in edits.items()}


# ----------------------------------------------------------------------------------------------
# neurons (basis directions of the hook's activation) and arbitrary directions


def neuron_hook(
    hook_name: str,
    edits: Edits,
    *,
    mode: str = "set",
    tokens: Tokens = "all",
    means: torch.Tensor | None = None,
) -> tuple[str, HookFn]:
    """Edit coordinates of the activation at `hook_name` (the paper's neuron baseline: set one to s)."""
    indices, values = normalise_edits(edits, mode)

    def hook(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        if max(indices) >= activation.shape[-1] or min(indices) < 0:
            raise ValueError(
                f"neurons {indices} are out of range for {hook.name} of width {activation.shape[-1]}"
            )
        idx = torch.as_tensor(indices, device=activation.device)
        new = activation.clone()
        mean = None if means is None else means.to(activation.device, activation.dtype)[idx]
        new[..., idx] = apply_mode(activation[..., idx], mode, _as_tensor(values, activation), mean)
        return _masked(new, activation, token_mask(tokens, activation))

    return hook_name, hook


def direction_hook(
    hook_name: str,
    directions: torch.Tensor,
    values: Sequence[float] | float,
    *,
    mode: str = "add",
    tokens: Tokens = "all",
) -> tuple[str, HookFn]:
    """Steer along directions u ([d] or [k, d]), e.g. `alpha * W_dec[j]` with mode='add'.

    The coefficient of x along u is its projection c = x.u / |u|^2 (directions treated one by one);
    mode add: x + v u; set: x + (v - c) u; scale: x + (v - 1) c u; zero: x - c u.
    """
    check_mode(mode)
    if mode == "mean":
        raise ValueError(
            "mode='mean' is defined for SAE features and neurons; for a direction use mode='set'"
        )
    dirs = directions.detach().reshape(-1, directions.shape[-1])
    vals = [float(values)] * dirs.shape[0] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(vals) != dirs.shape[0]:
        raise ValueError(f"{dirs.shape[0]} directions but {len(vals)} values")

    def hook(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        u = dirs.to(activation.device, activation.dtype)
        if u.shape[-1] != activation.shape[-1]:
            raise ValueError(
                f"directions of width {u.shape[-1]} do not fit {hook.name} of width {activation.shape[-1]}"
            )
        coef = activation @ u.T / (u * u).sum(-1)
        delta = (apply_mode(coef, mode, _as_tensor(vals, activation)) - coef) @ u
        return _masked(activation + delta, activation, token_mask(tokens, activation))

    return hook_name, hook


# ----------------------------------------------------------------------------------------------
# statistics needed by mean ablation


@torch.no_grad()
def feature_means(
    model: HookedViT, sae: SAE[Any], images: torch.Tensor, *, tokens: Tokens = "all", batch_size: int = 64
) -> torch.Tensor:
    """Mean SAE activation per feature over `images` at the selected tokens ([d_sae], for mode='mean')."""
    name = sae_hook_name(sae)
    total, count = None, 0
    for start in range(0, len(images), batch_size):
        _, cache = model.run_with_cache(images[start : start + batch_size], names_filter=[name])
        act = cache[name]
        mask = token_mask(tokens, act)
        f = sae.encode(act if mask is None else act[:, mask])
        f = f.reshape(-1, f.shape[-1]).double()
        total = f.sum(0) if total is None else total + f.sum(0)
        count += f.shape[0]
    if total is None:
        raise ValueError("feature_means needs at least one image")
    return (total / count).to(sae.dtype)
