"""TextSpan (Gandelsman, Efros & Steinhardt, ICLR 2024, Sec. 4.1, Alg. 1): describe a head with a few texts.

A head's direct contributions to the image embedding over many images form a matrix C [N, d_embed].
TextSpan greedily picks, from a bank of text embeddings, the text whose direction explains the most
variance of C, then removes that direction from C and from every text, and repeats. The chosen texts
span the head's output space; the fraction of C's variance each explains says how much of the head
it describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sae_clip_plugin import registry
from sae_clip_plugin.analysis.vocabulary import load_vocabulary


@dataclass(frozen=True)
class TextSpanEntry:
    text: str
    variance_explained: float  # fraction of the head's total output variance this text's direction explains


def text_span(
    contributions: torch.Tensor, text_embeddings: torch.Tensor, texts: Sequence[str], n_texts: int = 5
) -> list[TextSpanEntry]:
    """The `n_texts` texts that greedily explain most of the variance of `contributions` ([N, d])."""
    C = contributions.detach().to(torch.float64).cpu()
    T = text_embeddings.detach().to(torch.float64).cpu().clone()
    if C.ndim != 2 or T.ndim != 2 or C.shape[1] != T.shape[1]:
        raise ValueError(
            f"contributions [N, d] and text embeddings [M, d] must share d, got {tuple(C.shape)} and {tuple(T.shape)}"
        )
    if len(texts) != T.shape[0]:
        raise ValueError(f"{len(texts)} texts for {T.shape[0]} text embeddings")
    if not 1 <= n_texts <= len(texts):
        raise ValueError(f"n_texts must be between 1 and the number of texts ({len(texts)}), got {n_texts}")
    C = C - C.mean(0, keepdim=True)
    total = float(C.pow(2).sum())
    chosen: list[TextSpanEntry] = []
    available = torch.ones(len(texts), dtype=torch.bool)
    for _ in range(n_texts):
        norms = T.norm(dim=1)
        usable = available & (norms > 1e-9)
        if not usable.any():
            break
        directions = T / norms.clamp_min(1e-12)[:, None]
        explained = (C @ directions.T).pow(2).sum(0)  # [M]
        explained[~usable] = -1.0
        j = int(explained.argmax())
        chosen.append(TextSpanEntry(texts[j], float(explained[j]) / total if total > 0 else 0.0))
        u = directions[j]
        C = C - (C @ u)[:, None] * u
        T = T - (T @ u)[:, None] * u
        available[j] = False
    return chosen


def text_bank(spec: str) -> list[str]:
    """TextSpan's texts: a world's registered text bank (e.g. "toy": each concept as a thing and as a written
    word, so TextSpan can tell "a circle" from "the word circle"), else a vocabulary spec
    (`analysis.vocabulary.load_vocabulary`)."""
    bank = registry.find("text_bank", spec)
    return bank() if bank is not None else load_vocabulary(spec)
