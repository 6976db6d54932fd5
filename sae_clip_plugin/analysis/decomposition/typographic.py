"""Which heads carry written text into the image embedding (the Dyslexify idea, through direct effects).

For twin images (the same scene without and with a word naming a wrong class), a head's direct
typographic effect is how much more its direct contribution favours the written class over the true
one on the attacked image than on the clean one:

    effect[layer, head] = mean over pairs of  delta_attacked - delta_clean,
    delta = DLA(head -> logit of written class) - DLA(head -> logit of true class)

in logit units (CLIP's logit scale applied; see `direct_logit_attribution`). The heads with the
largest effect are the ones a head-ablation defence should remove.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_clip_plugin.analysis.decomposition.direct_effects import direct_logit_attribution
from sae_clip_plugin.model.device import model_device


@torch.no_grad()
def head_logit_margins(
    model: Any,
    pixels: torch.Tensor,
    favoured: torch.Tensor,
    against: torch.Tensor,
    class_weights: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """[N, layer, head]: each head's direct effect on logit[favoured] - logit[against], image by image."""
    device = model_device(model)
    out = []
    for start in range(0, pixels.shape[0], batch_size):
        stop = start + batch_size
        dla = direct_logit_attribution(model, pixels[start:stop].to(device), class_weights)
        per_head = dla.head_totals().cpu()  # [b, layer, head, class]
        fav = favoured[start:stop].long().reshape(-1, 1, 1, 1).expand(*per_head.shape[:3], 1)
        ag = against[start:stop].long().reshape(-1, 1, 1, 1).expand(*per_head.shape[:3], 1)
        out.append((per_head.gather(3, fav) - per_head.gather(3, ag))[..., 0])
    return torch.cat(out)


def typographic_head_effects(
    model: Any,
    attacked: torch.Tensor,
    clean: torch.Tensor,
    written: torch.Tensor,
    true: torch.Tensor,
    class_weights: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """[layer, head]: mean direct typographic effect over the twin pairs (see the module docstring)."""
    if not attacked.shape == clean.shape or len(written) != len(attacked) or len(true) != len(attacked):
        raise ValueError("attacked and clean twins, written and true labels must all have one entry per pair")
    on_attacked = head_logit_margins(model, attacked, written, true, class_weights, batch_size)
    on_clean = head_logit_margins(model, clean, written, true, class_weights, batch_size)
    return (on_attacked - on_clean).mean(0)
