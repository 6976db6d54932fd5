"""Monosemanticity score (MS) of Pach et al. 2025 (arXiv 2504.02821, sec. 3.2), one score per feature.

A feature's activations over N images are min-max normalised to a_i in [0, 1]; with e_i an image's embedding by a
*second* encoder (one the SAE was not trained on), MS = sum_{i<j} a_i a_j cos(e_i, e_j) / sum_{i<j} a_i a_j.
Two variants exist, kept apart by name:

- "full": every pair of the N images, as sae-for-vlm's `metric.py` computes it (the paper's definition). Written
  pairwise it is O(N^2 F); here it is exact in O(N E F) from sum_{i<j} a_i a_j cos_ij = (|sum_i a_i u_i|^2 -
  sum_i a_i^2) / 2 with u_i = e_i / |e_i|, summed in float64 over chunks of images (memory O(F E)).
- "top16" (any "top<n>"): only each feature's n highest-activating images, as ViSAEBench's MonosemanticityScore
  (visaebench 0.1.0, default n = 16) computes it; the min and max of the normalisation are still over all N images.
  O(N F) to find the images, O(F n^2 E) for the scores.

Undefined scores are NaN: a constant feature (max = min), or no pair with a non-zero weight product.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

VARIANTS = ("full", "top16")
_TOP = re.compile(r"top(\d+)$")


def top_n_of(variant: str) -> int | None:
    """The n of a "top<n>" variant, None for "full"; other names are refused with the valid ones."""
    if variant == "full":
        return None
    match = _TOP.match(variant)
    if not match or int(match.group(1)) < 2:
        raise ValueError(f"unknown monosemanticity variant {variant!r}; use 'full' (sae-for-vlm) or 'top16' "
                         "(ViSAEBench; any top<n> with n >= 2)")  # fmt: skip
    return int(match.group(1))


def _unit(embeddings: torch.Tensor) -> torch.Tensor:
    e = embeddings.double()
    return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class MonosemanticityStats:
    """Streaming MS: feed (codes [B, F], embeddings [B, E]) batch by batch, then `result()` -> [F].

    Why streaming: `evaluate_sae` sees the images once; "full" keeps float64 sums (O(F E)), "top<n>" keeps each
    feature's n best images so far and the unit embeddings of all images (O(n F + N E)).
    """

    def __init__(self, d_sae: int, variant: str = "top16") -> None:
        self.variant, self.top_n = variant, top_n_of(variant)
        self.n = 0
        self.min = torch.full((d_sae,), float("inf"), dtype=torch.float64)
        self.max = torch.full((d_sae,), float("-inf"), dtype=torch.float64)
        self._sum_xu: torch.Tensor | None = None  # full: sum_i x_i u_i [F, E]
        self._sum_u: torch.Tensor | None = None
        self._sum_x = torch.zeros(d_sae, dtype=torch.float64)
        self._sum_xx = torch.zeros(d_sae, dtype=torch.float64)
        self._top_vals: torch.Tensor | None = None  # top<n>: [<=n, F] values and image indices
        self._top_idx: torch.Tensor | None = None
        self._units: list[torch.Tensor] = []

    def add(self, codes: torch.Tensor, embeddings: torch.Tensor) -> None:
        """One batch of per-image feature activations [B, F] and second-encoder embeddings [B, E]."""
        if codes.shape[0] != embeddings.shape[0]:
            raise ValueError(f"{codes.shape[0]} images of activations but {embeddings.shape[0]} embeddings; "
                             "pass one embedding per image")  # fmt: skip
        x, u = codes.detach().double().cpu(), _unit(embeddings.detach().cpu())
        self.min = torch.minimum(self.min, x.min(0).values)
        self.max = torch.maximum(self.max, x.max(0).values)
        if self.top_n is None:
            self._sum_xu = x.T @ u if self._sum_xu is None else self._sum_xu + x.T @ u
            self._sum_u = u.sum(0) if self._sum_u is None else self._sum_u + u.sum(0)
            self._sum_x += x.sum(0)
            self._sum_xx += (x * x).sum(0)
        else:
            self._units.append(u)
            idx = torch.arange(self.n, self.n + x.shape[0]).unsqueeze(1).expand_as(x)
            vals = x if self._top_vals is None else torch.cat([self._top_vals, x])
            idx = idx if self._top_idx is None else torch.cat([self._top_idx, idx])
            keep = vals.topk(min(self.top_n, vals.shape[0]), dim=0).indices
            self._top_vals, self._top_idx = vals.gather(0, keep), idx.gather(0, keep)
        self.n += x.shape[0]

    def result(self, feature_chunk: int = 1024) -> torch.Tensor:
        """MS per feature [F] (float64; NaN where undefined)."""
        if self.n == 0:
            raise ValueError("no images were added; MS needs at least two images")
        return self._full() if self.top_n is None else self._top(feature_chunk)

    def _full(self) -> torch.Tensor:
        # shifted by the minimum, unscaled: the range cancels between numerator and denominator
        m, n = self.min, self.n
        s_au = self._sum_xu - m[:, None] * self._sum_u[None, :]
        s_a = self._sum_x - n * m
        s_aa = self._sum_xx - 2 * m * self._sum_x + n * m * m
        num = (s_au * s_au).sum(1) - s_aa
        den = s_a * s_a - s_aa
        defined = (self.max > self.min) & (den > 1e-9 * s_a * s_a)
        return torch.where(defined, num / den.where(defined, torch.ones_like(den)), torch.nan)

    def _top(self, feature_chunk: int) -> torch.Tensor:
        units = torch.cat(self._units)
        span = self.max - self.min
        span = torch.where(span == 0, torch.ones_like(span), span)  # ViSAEBench's convention
        w = ((self._top_vals - self.min) / span).T  # [F, n]
        out = torch.empty(w.shape[0], dtype=torch.float64)
        k = w.shape[1]
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
        for s in range(0, w.shape[0], feature_chunk):
            u = units[self._top_idx[:, s : s + feature_chunk].T]  # [f, n, E]
            cos = u @ u.transpose(1, 2)
            ww = w[s : s + feature_chunk, :, None] * w[s : s + feature_chunk, None, :]
            num = (cos * ww)[:, upper].sum(1)
            den = ww[:, upper].sum(1)
            out[s : s + feature_chunk] = torch.where(den > 0, num / den.where(den > 0, 1.0), torch.nan)
        return out


def monosemanticity_scores(
    codes: torch.Tensor | Iterable[torch.Tensor],
    embeddings: torch.Tensor | Iterable[torch.Tensor],
    variant: str = "top16",
) -> torch.Tensor:
    """MS per feature [F] of per-image activations `codes` [N, F] and second-encoder `embeddings` [N, E].

    Either argument may be an iterable of matching chunks (so N x F never has to sit in memory at once).
    """
    code_chunks = [codes] if isinstance(codes, torch.Tensor) else codes
    embed_chunks = [embeddings] if isinstance(embeddings, torch.Tensor) else embeddings
    stats: MonosemanticityStats | None = None
    for c, e in zip(code_chunks, embed_chunks, strict=True):
        stats = stats or MonosemanticityStats(c.shape[-1], variant)
        stats.add(c, e)
    if stats is None:
        raise ValueError("no images given; MS needs per-image activations and embeddings")
    return stats.result()


def image_codes(sae: torch.nn.Module, activations: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Per-image feature activations [N, F]: the SAE's features at each token, max-pooled over tokens.

    activations: the hook's activations [N, tokens, d_in] (or [N, d_in] for one token per image); max pooling over
    tokens is ViSAEBench's image code; sae-for-vlm encodes the CLS token alone (pass [N, d_in]).
    """
    out = []
    with torch.no_grad():
        for s in range(0, activations.shape[0], batch_size):
            feats = sae.encode(activations[s : s + batch_size].to(sae.W_enc.dtype))
            out.append((feats.amax(1) if feats.ndim == 3 else feats).float().cpu())
    return torch.cat(out)


def monosemanticity(
    sae: torch.nn.Module, activations: torch.Tensor, embeddings: torch.Tensor, variant: str = "top16"
) -> torch.Tensor:
    """MS per feature of `sae` [d_sae] on the hook `activations` of N images and their `embeddings` [N, E] by a
    second encoder (the card-sized entry point; see `image_codes` for the pooling)."""
    return monosemanticity_scores(image_codes(sae, activations), embeddings, variant)
