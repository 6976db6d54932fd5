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

from typing import TYPE_CHECKING

import torch

from sae_clip_plugin.analysis.decomposition.direct_effects import direct_logit_attribution
from sae_clip_plugin.model.device import model_device

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def margins_from_head_logits(
    head_logits: torch.Tensor, favoured: torch.Tensor, against: torch.Tensor
) -> torch.Tensor:
    """[N, layer, head]: logit[favoured] - logit[against] of each head's direct logits ([N, layer, head, class])."""
    shape = (*head_logits.shape[:3], 1)
    fav = favoured.long().reshape(-1, 1, 1, 1).to(head_logits.device).expand(shape)
    ag = against.long().reshape(-1, 1, 1, 1).to(head_logits.device).expand(shape)
    return (head_logits.gather(3, fav) - head_logits.gather(3, ag))[..., 0]


def effects_from_margins(on_attacked: torch.Tensor, on_clean: torch.Tensor) -> torch.Tensor:
    """[layer, head]: mean over pairs of the attacked margin minus its clean twin's."""
    return (on_attacked - on_clean).mean(0)


@torch.no_grad()
def head_logit_margins(
    model: HookedViT,
    pixels: torch.Tensor,
    favoured: torch.Tensor,
    against: torch.Tensor,
    class_weights: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """[N, layer, head]: each head's direct effect on logit[favoured] - logit[against], image by image.

    Projects onto the classes inside the decomposition, so the per-token terms stay [class]-wide (small for
    ViT-B/32 at any batch size); `heads.head_totals_and_logits` keeps the embedding-wide terms instead.
    """
    device = model_device(model)
    out = []
    for start in range(0, pixels.shape[0], batch_size):
        stop = start + batch_size
        dla = direct_logit_attribution(model, pixels[start:stop].to(device), class_weights)
        out.append(
            margins_from_head_logits(dla.head_totals().cpu(), favoured[start:stop], against[start:stop])
        )
    return torch.cat(out)


def typographic_head_effects(
    model: HookedViT,
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
    return effects_from_margins(on_attacked, on_clean)
