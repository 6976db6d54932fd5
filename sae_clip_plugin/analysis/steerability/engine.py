"""Mean readout shift delta_bar for many (feature, value) edits: the fast path and the naive reference.

Fast path: steering at hook h changes only what comes after h. The activations up to h are computed
once per image (`run_with_cache(..., stop_at_layer)`), each feature's coefficient and direction are
taken from the basis, and batches of (edits x images) run only the remaining layers:
- `blocks.L.hook_resid_post`: the edited stream enters block L+1 (`model(x, start_at_layer=L+1)`);
- `blocks.L.hook_resid_pre`: it enters block L;
- any other hook inside block L: block L is re-run from its cached resid_pre with a hook adding the edit;
- any other hook: a full forward with a hook adding the edit (correct, not faster).
Naive path: one `run_with_hooks` full forward per edit with the steering hook from `steering`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from sae_clip_plugin.analysis.steerability.suffix import finish_forward
from sae_clip_plugin.analysis.steering.bases import Basis, SAEBasis
from sae_clip_plugin.analysis.steering.interventions import apply_mode, check_mode, token_mask
from sae_clip_plugin.analysis.vocabulary import readout_probabilities
from sae_clip_plugin.model.hooks import BLOCK_HOOK

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

Edit = tuple[int, float]  # (feature index, value)


@dataclass(frozen=True)
class ResumePlan:
    """How to finish a forward pass after editing `hook_name`."""

    hook_name: str
    kind: str  # "post" | "pre" | "inside" | "full"
    layer: int | None  # block whose hook it is

    @property
    def stop_at_layer(self) -> int | None:
        if self.kind == "full":
            return None
        return self.layer if self.kind == "pre" else self.layer + 1

    @property
    def start_at_layer(self) -> int | None:
        return {
            "post": self.layer + 1 if self.layer is not None else None,
            "pre": self.layer,
            "inside": self.layer,
        }.get(self.kind)


def resume_plan(model: HookedViT, hook_name: str) -> ResumePlan:
    model.check_hook_names([hook_name])
    match = BLOCK_HOOK.match(hook_name)
    if match is None:
        return ResumePlan(hook_name, "full", None)
    layer, rest = int(match.group(1)), match.group(2)
    kind = {"hook_resid_post": "post", "hook_resid_pre": "pre"}.get(rest, "inside")
    return ResumePlan(hook_name, kind, layer)


@dataclass
class _ImageChunk:
    resume: torch.Tensor  # what the remaining forward starts from (stream or pixels)
    coef: torch.Tensor  # [n, T, U] clean coefficients of the unique features steered
    scale: torch.Tensor | None  # [n, T, d] output scale of the basis
    error: torch.Tensor | None  # [n, T, d] SAE error (only when steering without it)
    mask: torch.Tensor | None  # [T] selected tokens
    p_clean: torch.Tensor  # [n, V]
    sample: torch.Tensor  # [1, T, d] activation of the first image (for the fast-path check)


def _run_prefix(model: HookedViT, plan: ResumePlan, pixels: torch.Tensor) -> tuple:
    """(output, activation at the hook, block's resid_pre or None), computing nothing past the hook's block."""
    if plan.kind == "pre":  # the stream entering block L is what stop_at_layer=L returns
        out = model(pixels, stop_at_layer=plan.stop_at_layer)
        return out, out, None
    names = [plan.hook_name] + ([f"blocks.{plan.layer}.hook_resid_pre"] if plan.kind == "inside" else [])
    out, cache = model.run_with_cache(pixels, names_filter=names, stop_at_layer=plan.stop_at_layer)
    return out, cache[plan.hook_name], cache[names[-1]] if plan.kind == "inside" else None


def _prepare(
    model: HookedViT,
    basis: Basis,
    plan: ResumePlan,
    pixels: torch.Tensor,
    unique: torch.Tensor,
    text: torch.Tensor,
    *,
    tokens: Any,
    use_error_term: bool,
    readout_scale: float,
) -> _ImageChunk:
    """One pass up to the hook: clean activations, coefficients, and the clean readout."""
    out, act, resid_pre = _run_prefix(model, plan, pixels)
    if act.ndim != 3:
        raise ValueError(
            f"steerability needs a hook with activations [batch, tokens, d]; {plan.hook_name} gives "
            f"{tuple(act.shape)}"
        )
    resume = {"post": act, "pre": act, "inside": resid_pre, "full": pixels}[plan.kind]
    clean = out if plan.kind == "full" else _finish(model, plan, resume)
    return _ImageChunk(
        resume=resume,
        coef=basis.coefficients(act, unique),
        scale=basis.out_scale(act),
        error=None if use_error_term else basis.error(act),
        mask=token_mask(tokens, act),
        p_clean=readout_probabilities(clean, text, readout_scale),
        sample=act[:1],
    )


def _edit_deltas(
    chunk: _ImageChunk,
    basis: Basis,
    unique: torch.Tensor,
    positions: torch.Tensor,
    values: torch.Tensor,
    mode: str,
    means: torch.Tensor | None,
) -> torch.Tensor:
    """[e, n, T, d] changes to the activation at the hook for e edits on the chunk's n images."""
    coef = chunk.coef[..., positions]  # [n, T, e]
    mean = None if means is None else means.to(coef.device, coef.dtype)[unique[positions]]
    change = apply_mode(coef, mode, values.to(coef.dtype), mean) - coef
    if chunk.mask is not None:
        change = change * chunk.mask.view(1, -1, 1).to(change.dtype)
    dirs = basis.directions(unique[positions]).to(coef.device, coef.dtype)  # [e, d]
    delta = change.permute(2, 0, 1).unsqueeze(-1) * dirs[:, None, None, :]
    if chunk.scale is not None:
        delta = delta * chunk.scale.to(delta.dtype)
    if chunk.error is not None:  # without the error term the selected tokens become decode(f')
        err = chunk.error if chunk.mask is None else chunk.error * chunk.mask.view(1, -1, 1)
        delta = delta - err.to(delta.dtype)
    return delta


def _finish(model: HookedViT, plan: ResumePlan, resume: torch.Tensor) -> torch.Tensor:
    if plan.kind in ("post", "pre"):
        return finish_forward(model, resume, plan.start_at_layer)
    return model(resume, start_at_layer=plan.start_at_layer)


def _run_edited(model: HookedViT, plan: ResumePlan, chunk: _ImageChunk, delta: torch.Tensor) -> torch.Tensor:
    """Image embeddings [e * n, d_embed] of the chunk's images under each of the e edits."""
    e, n = delta.shape[:2]
    flat = delta.reshape(e * n, *delta.shape[2:])
    if plan.kind in ("post", "pre"):
        x = (chunk.resume.unsqueeze(0) + delta.to(chunk.resume.dtype)).reshape(flat.shape)
        return _finish(model, plan, x)
    resume = chunk.resume.unsqueeze(0).expand(e, *chunk.resume.shape).reshape(e * n, *chunk.resume.shape[1:])

    def add(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        return activation + flat.to(activation.dtype)

    kwargs = {} if plan.kind == "full" else {"start_at_layer": plan.start_at_layer}
    return model.run_with_hooks(resume, fwd_hooks=[(plan.hook_name, add)], **kwargs)


def _index_edits(edits: Sequence[Edit]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    features = torch.tensor([int(f) for f, _ in edits], dtype=torch.long)
    unique, positions = torch.unique(features, return_inverse=True)
    values = torch.tensor([float(v) for _, v in edits], dtype=torch.float64)
    return unique, positions, values


@torch.no_grad()
def fast_mean_shift(
    model: HookedViT,
    basis: Basis,
    pixels: torch.Tensor,
    text: torch.Tensor,
    edits: Sequence[Edit],
    *,
    mode: str = "set",
    tokens: Any = "all",
    use_error_term: bool = True,
    means: torch.Tensor | None = None,
    readout_scale: float = 100.0,
    batch_size: int = 256,
    image_batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """delta_bar [len(edits), V] (float64): mean over images of p_steered - p_clean, the fast way."""
    check_mode(mode)
    if not edits:
        raise ValueError("no edits to run")
    plan = resume_plan(model, basis.hook_name)
    unique, positions, values = _index_edits(edits)
    device = model.embed.W_E.device
    chunks = [
        _prepare(
            model,
            basis,
            plan,
            pixels[i : i + image_batch_size].to(device),
            unique.to(device),
            text,
            tokens=tokens,
            use_error_term=use_error_term,
            readout_scale=readout_scale,
        )
        for i in range(0, len(pixels), image_batch_size)
    ]
    if isinstance(basis, SAEBasis):
        basis.check_affine(chunks[0].sample, unique[:4])
    total = torch.zeros(len(edits), text.shape[0], dtype=torch.float64)
    bar = tqdm(total=len(edits) * len(pixels), disable=not progress, desc="steering", unit="run")
    for chunk in chunks:
        n = chunk.p_clean.shape[0]
        per_batch = max(1, batch_size // n)
        for start in range(0, len(edits), per_batch):
            sl = slice(start, start + per_batch)
            delta = _edit_deltas(
                chunk, basis, unique.to(device), positions[sl].to(device), values[sl].to(device), mode, means
            )
            emb = _run_edited(model, plan, chunk, delta)
            p = readout_probabilities(emb, text, readout_scale).view(delta.shape[0], n, -1)
            total[sl] += (p - chunk.p_clean.unsqueeze(0)).double().sum(1).cpu()
            bar.update(delta.shape[0] * n)
    bar.close()
    return total / len(pixels)


@torch.no_grad()
def naive_mean_shift(
    model: HookedViT,
    basis: Basis,
    pixels: torch.Tensor,
    text: torch.Tensor,
    edits: Sequence[Edit],
    *,
    mode: str = "set",
    tokens: Any = "all",
    use_error_term: bool = True,
    means: torch.Tensor | None = None,
    readout_scale: float = 100.0,
    image_batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """The same delta_bar, one full `run_with_hooks` forward per edit (the reference and the baseline)."""
    check_mode(mode)
    device = model.embed.W_E.device
    batches = [pixels[i : i + image_batch_size].to(device) for i in range(0, len(pixels), image_batch_size)]
    clean = [readout_probabilities(model(b), text, readout_scale) for b in batches]
    total = torch.zeros(len(edits), text.shape[0], dtype=torch.float64)
    for row, (feature, value) in enumerate(tqdm(edits, disable=not progress, desc="steering (naive)")):
        hook = basis.hook(
            int(feature), float(value), mode=mode, tokens=tokens, use_error_term=use_error_term, means=means
        )
        for b, p_clean in zip(batches, clean, strict=True):
            p = readout_probabilities(model.run_with_hooks(b, fwd_hooks=[hook]), text, readout_scale)
            total[row] += (p - p_clean).double().sum(0).cpu()
    return total / len(pixels)
