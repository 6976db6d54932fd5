"""A steering strength that carries over between models: relative to the hook's typical activation norm.

The paper steers at s = 150 (arXiv 2504.08729) with ViT-B/32 SAEs whose inputs are layer-normalised per token,
so a typical input there has norm sqrt(768) and a unit decoder row set to 150 adds a vector 150 / sqrt(768) = 5.41
times as long as the input it edits. The same absolute 150 on a smaller model (the toy CLIP: d_model 128, inputs of
norm ~11) pushes more than twice as hard, and every readout saturates, the random-model control's too.

The relative strength r fixes the ratio instead: feature j is set to

    s_j = r * typical input norm / |direction_j|

where the typical input norm is the root mean square, over the steering images and the steered tokens, of the
activation's norm in the space the feature's direction lives in (the SAE's input after its own normalisation;
the raw activation for neurons and directions). r = 5.41 (`PAPER_RELATIVE_STRENGTH`) gives back s = 150 for the
paper's layer-normalised ViT-B/32 SAEs with unit decoder rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from sae_clip_plugin.analysis.pixels import as_pixels
from sae_clip_plugin.analysis.steering.bases import Basis, SAEBasis
from sae_clip_plugin.analysis.steering.interventions import token_mask
from sae_clip_plugin.model.device import model_device
from sae_clip_plugin.model.hooks import stop_layer
from sae_clip_plugin.model.sae_splice import transcoder_output_hook

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

PAPER_STRENGTH = 150.0
PAPER_D_MODEL = 768  # ViT-B/32
PAPER_RELATIVE_STRENGTH = PAPER_STRENGTH / math.sqrt(PAPER_D_MODEL)  # 5.41


def basis_input(basis: Basis, x: torch.Tensor) -> torch.Tensor:
    """The activation in the space `basis.directions` live in (an SAE's normalised input, else `x` itself)."""
    if not isinstance(basis, SAEBasis):
        return x
    sae = basis.sae
    normalised = sae.run_time_activation_norm_fn_in(sae.reshape_fn_in(x.to(sae.dtype)))
    for leftover in ("ln_mu", "ln_std", "x_norm_coeff"):  # sae_lens keeps these for the matching _out call
        sae.__dict__.pop(leftover, None)
    return normalised


@torch.no_grad()
def typical_input_norm(
    model: HookedViT, basis: Basis, pixels: torch.Tensor, tokens: Any = "all", batch_size: int = 64
) -> float:
    """Root mean square of the norm of `basis_input` at the steered tokens, over `pixels`."""
    device, stop = model_device(model), stop_layer(basis.hook_name)  # no block past the hook is run
    total, count = 0.0, 0
    for start in range(0, pixels.shape[0], batch_size):
        _, cache = model.run_with_cache(
            pixels[start : start + batch_size].to(device), names_filter=[basis.hook_name], stop_at_layer=stop
        )
        x = basis_input(basis, cache[basis.hook_name]).double()
        mask = token_mask(tokens, x)
        norms = x.norm(dim=-1)
        norms = norms if mask is None else norms[:, mask.to(norms.device)]
        total += float(norms.pow(2).sum())
        count += norms.numel()
    return math.sqrt(total / max(count, 1))


def absolute_strengths(
    model: HookedViT,
    basis: Basis,
    pixels: torch.Tensor,
    features: list[int],
    relative_strength: float,
    tokens: Any = "all",
) -> tuple[list[float], float]:
    """(per-feature absolute strengths s_j, the typical input norm) for `relative_strength` r."""
    norm = typical_input_norm(model, basis, pixels, tokens)
    lengths = basis.directions(torch.tensor(features, dtype=torch.long)).double().norm(dim=-1)
    if (lengths <= 0).any():
        dead = [f for f, n in zip(features, lengths.tolist(), strict=True) if n <= 0]
        raise ValueError(
            f"features {dead} have a zero decoder direction; a relative strength is undefined for them"
        )
    return [float(relative_strength * norm / n) for n in lengths.tolist()], norm


RELATIVE_PREFIX = "relative:"


def relative_strengths(
    model: HookedViT,
    sae: Any,
    images: Any,
    relative: Mapping[int, float],
    tokens: Any = "all",
) -> dict[int, float]:
    """{feature: absolute value to set it to} for relative strengths {feature: r} on `images` (pixels or PIL
    images; the typical input norm is measured on them): what `steer` sets for {feature: "relative:r"}.

        relative_strengths(model, sae, pixels, {7: PAPER_RELATIVE_STRENGTH})   # {7: s}, s = 150 on ViT-B/32
    """
    if transcoder_output_hook(sae):
        raise ValueError("relative strengths are defined for SAEs that read and write one hook; give a transcoder "
                         "absolute values")  # fmt: skip
    basis = SAEBasis(sae, sae.cfg.metadata.hook_name)
    pixels = as_pixels(model, images)
    out = {}
    for r, features in _grouped(relative).items():
        values, _ = absolute_strengths(model, basis, pixels, features, r, tokens)
        out.update(zip(features, values, strict=True))
    return {f: out[f] for f in relative}


def _grouped(relative: Mapping[int, float]) -> dict[float, list[int]]:
    groups: dict[float, list[int]] = {}
    for feature, r in relative.items():
        groups.setdefault(float(r), []).append(int(feature))
    return groups


def parse_relative(value: Any) -> float | None:
    """r of a "relative:r" steering value; None for a number."""
    if not isinstance(value, str):
        return None
    if not value.startswith(RELATIVE_PREFIX):
        raise ValueError(
            f"a steering value is a number or 'relative:<r>' (e.g. 'relative:5.41'), got {value!r}"
        )
    try:
        r = float(value.removeprefix(RELATIVE_PREFIX))
    except ValueError:
        raise ValueError(f"{value!r}: the relative strength after 'relative:' must be a number") from None
    if not math.isfinite(r):
        raise ValueError(f"{value!r}: the relative strength must be finite")
    return r
