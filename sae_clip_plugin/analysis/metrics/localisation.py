"""Localisation: Moran's I of a feature's patch map (ViSAEBench's FeatureLocalization, visaebench 0.1.0 M1).

For one image and one feature, x is the feature's activation at each patch of the H x W grid (row-major), x_c = x -
mean(x), and W the binary queen-contiguity weights (W_pq = 1 when patches p != q touch by an edge or a corner:
8 neighbours inside, 5 on an edge, 3 in a corner; no row standardisation). Moran (1950):

    I = (P / S) * (x_c^T W x_c) / (x_c^T x_c),   P = H * W patches, S = sum_pq W_pq.

As in ViSAEBench, an (image, feature) pair counts only when the feature is non-zero on at least `min_active`
patches and on at most int(max_active_fraction * P) (not a background feature), and x is not constant; a feature's
score is the mean I over its first `max_images` valid images, and NaN with fewer than `min_images` valid images.
(ViSAEBench stops counting a feature once it has `max_images` images at a granularity of its image batch; here the
cap is exact, which is ViSAEBench's rule with an image batch of 1.)

W x is computed as a sum of the 8 shifted grids, so a batch costs O(B P F), not O(B P^2 F).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_OFFSETS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))


def neighbour_sum(grid: torch.Tensor) -> torch.Tensor:
    """(W x) on the grid: each cell's sum over its queen neighbours. grid: [B, H, W, F] -> [B, H, W, F]."""
    h, w = grid.shape[1], grid.shape[2]
    padded = F.pad(grid, (0, 0, 1, 1, 1, 1))
    return sum(padded[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in _OFFSETS)


def grid_shape(n_patches: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of the patch grid: `grid` when given, else the square one."""
    if grid is not None:
        if grid[0] * grid[1] != n_patches:
            raise ValueError(
                f"grid {grid} has {grid[0] * grid[1]} cells but the maps have {n_patches} patches"
            )
        return grid
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"{n_patches} patches is not a square grid; pass grid=(height, width)")
    return side, side


def morans_i(maps: torch.Tensor, grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Moran's I per (image, feature) of patch maps [B, P, F] (row-major patches): (I [B, F], x_c^T x_c [B, F]).

    Float64. I is meaningless where the second tensor (the sum of squared deviations) is 0.
    """
    b, p, f = maps.shape
    h, w = grid_shape(p, grid)
    x = maps.double()
    xc = x - x.mean(1, keepdim=True)
    wx = neighbour_sum(xc.reshape(b, h, w, f)).reshape(b, p, f)
    s = float(neighbour_sum(torch.ones(1, h, w, 1, dtype=torch.float64)).sum())
    denom = (xc * xc).sum(1)
    return (p / s) * (xc * wx).sum(1) / denom.clamp_min(1e-10), denom


class LocalisationStats:
    """Streaming per-feature localisation: feed patch maps [B, P, F] batch by batch, then `result()` -> [F]."""

    def __init__(
        self,
        d_sae: int,
        grid: tuple[int, int] | None = None,
        min_active: int = 5,
        max_active_fraction: float = 0.9,
        min_images: int = 50,
        max_images: int = 200,
    ) -> None:
        self.grid, self.min_active, self.max_active_fraction = grid, min_active, max_active_fraction
        self.min_images, self.max_images = min_images, max_images
        self.total = torch.zeros(d_sae, dtype=torch.float64)
        self.count = torch.zeros(d_sae, dtype=torch.long)

    def add(self, maps: torch.Tensor) -> None:
        """One batch of feature activations at the patches [B, P, F], patches in row-major grid order."""
        maps = maps.detach().cpu()
        mi, denom = morans_i(maps, self.grid)
        active = (maps != 0).sum(1)
        valid = (active >= self.min_active) & (active <= int(self.max_active_fraction * maps.shape[1]))
        valid &= denom > 1e-10
        # the first `max_images` valid images of each feature, in image order
        valid &= self.count + valid.long().cumsum(0) <= self.max_images
        self.total += torch.where(valid, mi, 0.0).sum(0)
        self.count += valid.long().sum(0)

    def result(self) -> torch.Tensor:
        """Mean Moran's I per feature [F] (float64), NaN for a feature with fewer than `min_images` valid images."""
        ok = self.count >= self.min_images
        return torch.where(ok, self.total / self.count.clamp_min(1), torch.nan)


def localisation_scores(
    maps: torch.Tensor, grid: tuple[int, int] | None = None, **rules: int | float
) -> torch.Tensor:
    """Per-feature localisation [F] of patch maps [N, P, F] (one call of `LocalisationStats`; `rules` its
    min_active, max_active_fraction, min_images, max_images)."""
    stats = LocalisationStats(maps.shape[-1], grid, **rules)  # type: ignore[arg-type]
    for s in range(0, maps.shape[0], 64):
        stats.add(maps[s : s + 64])
    return stats.result()


def localisation(
    sae: torch.nn.Module,
    activations: torch.Tensor,
    grid: tuple[int, int] | None = None,
    batch_size: int = 64,
    **rules: int | float,
) -> torch.Tensor:
    """Per-feature localisation of `sae` [d_sae] on the hook `activations` of the patch tokens [N, P, d_in] (drop
    the CLS token first: `acts[:, 1:]`); the card-sized entry point."""
    stats: LocalisationStats | None = None
    with torch.no_grad():
        for s in range(0, activations.shape[0], batch_size):
            feats = sae.encode(activations[s : s + batch_size].to(sae.W_enc.dtype))
            stats = stats or LocalisationStats(feats.shape[-1], grid, **rules)  # type: ignore[arg-type]
            stats.add(feats)
    if stats is None:
        raise ValueError("no images given; pass activations [N, patches, d_in]")
    return stats.result()
