"""The second image encoder of the monosemanticity score: embeddings from another view of the same pixels.

Pach et al. (arXiv 2504.02821, sec. 3.2) embed images with an encoder other than the one the SAE reads (DINOv2 or
CLIP ViT-B/32); ViSAEBench warns that the SAE's own backbone inflates the score. Options here:

- "pixels": a joint colour histogram (4 x 4 x 4 bins of the denormalised RGB values, as fractions of the image).
  Model-free, position-free: two images are close when they share colours, i.e. a shape colour and a
  background on the toy world. Blind to shape and written words.
- "self": the model's own image embedding (circular, as ViSAEBench warns; for comparison only).
- a model spec (open_clip:..., hf:..., random:..., a registered name): that model's image embedding, the pixels
  denormalised with the evaluated model's mean / std, resized to its input size and renormalised with its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's, as open_clip uses when a config names none
DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)


def _stats(preprocess: dict[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = preprocess or {}
    mean = torch.tensor(cfg.get("mean") or DEFAULT_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.get("std") or DEFAULT_STD, dtype=torch.float32).view(1, -1, 1, 1)
    return mean, std


def colour_histogram(
    pixels: torch.Tensor, preprocess: dict[str, Any] | None = None, bins: int = 4
) -> torch.Tensor:
    """[B, bins^3] joint RGB histogram (fractions) of normalised pixels [B, 3, H, W]."""
    mean, std = _stats(preprocess)
    rgb = (pixels.detach().float().cpu() * std + mean).clamp(0, 1)
    q = (rgb * bins).long().clamp_max(bins - 1)  # [B, 3, H, W]
    code = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = F.one_hot(code.reshape(code.shape[0], -1), bins**3).float().mean(1)
    return hist


def model_embedder(encoder: Any, preprocess: dict[str, Any] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels normalised for the evaluated model -> `encoder`'s image embedding (a HookedViT)."""
    mean, std = _stats(preprocess)
    e_mean, e_std = _stats(encoder.cfg.preprocess)
    size = encoder.cfg.image_size
    device = next(encoder.parameters()).device

    @torch.no_grad()
    def embed(pixels: torch.Tensor) -> torch.Tensor:
        rgb = pixels.detach().float().cpu() * std + mean
        if rgb.shape[-1] != size:
            rgb = F.interpolate(rgb, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        return encoder(((rgb - e_mean) / e_std).to(device)).float().cpu()

    return embed


def second_encoder(spec: str, model: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The embedder `spec` names ("pixels", "self" or a model spec) for pixels preprocessed for `model`."""
    preprocess = model.cfg.preprocess
    if spec == "pixels":
        return lambda pixels: colour_histogram(pixels, preprocess)
    if spec == "self":
        return model_embedder(model, preprocess)
    from sae_clip_plugin.model.hooked_vit import HookedViT

    return model_embedder(HookedViT.from_pretrained(spec).eval(), preprocess)


ATTRIBUTE_FIELDS = ("shape", "colour", "background", "word")


def attribute_embeddings(
    metas: Sequence[dict[str, Any]], fields: Sequence[str] = ATTRIBUTE_FIELDS
) -> torch.Tensor:
    """[N, E] concatenated one-hots of each image's planted attributes (a world's ground truth, e.g. the toy's
    `ToyDataset.meta(i)`); an image without a value for a field (no shape, nothing written) gets zeros there.

    Why: an oracle second encoder. The cosine of two images is the fraction of planted attributes they share
    (normalised by how many each has), so the monosemanticity score reads "do a feature's top images share a
    planted concept", with no pixel statistics or second model in between.
    """
    columns = []
    for field in fields:
        values = sorted({str(m[field]) for m in metas if m.get(field) is not None})
        if not values:
            continue
        index = {v: i for i, v in enumerate(values)}
        block = torch.zeros(len(metas), len(values))
        for row, m in enumerate(metas):
            if m.get(field) is not None:
                block[row, index[str(m[field])]] = 1.0
        columns.append(block)
    if not columns:
        raise ValueError(
            f"no image carries any of the fields {list(fields)}; pass the metadata of a world's images"
        )
    return torch.cat(columns, 1)
