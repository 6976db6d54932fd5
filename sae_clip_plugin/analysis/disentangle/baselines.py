"""Baselines for disentanglement: k random SAE features, and Dyslexify-style attention-head ablation.

The head baseline zeroes the CLS-position output of chosen attention heads: `z[:, 0, head, :] = 0` at
`blocks.L.attn.hook_z`, so those heads add nothing (beyond the output bias) to the CLS residual stream.
The disentanglement sweep chooses the heads by their direct typographic effect on the image embedding
(`sae_clip_plugin.analysis.decomposition.typographic`); `cls_text_attention` is the older, attention-only
criterion (how much CLS attends to the patches a word covers), kept for comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformer_lens.hook_points import HookPoint

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

Head = tuple[int, int]  # (layer, head)


# ------------------------------------------------------------------------------------------------
# random features


def random_features(
    n_features: int,
    k: int,
    seed: int,
    *,
    candidates: Sequence[int] | None = None,
    exclude: Iterable[int] = (),
) -> list[int]:
    """k distinct features drawn uniformly from `candidates` (default all), never from `exclude`.

    Drawing from the features that fire on the data (pass them as `candidates`) keeps the baseline
    honest: suppressing dead features would trivially change nothing.
    """
    pool = list(range(n_features)) if candidates is None else [int(c) for c in candidates]
    banned = {int(e) for e in exclude}
    pool = [c for c in pool if c not in banned]
    if k > len(pool):
        raise ValueError(f"cannot draw {k} random features from {len(pool)} candidates; lower k")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(pool), generator=gen)[:k]
    return sorted(pool[int(i)] for i in order)


# ------------------------------------------------------------------------------------------------
# head ablation


def head_ablation_hooks(heads: Sequence[Head], position: int = 0) -> list[tuple[str, Any]]:
    """Hooks zeroing the given heads' `hook_z` at one token position (CLS by default), one per layer."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    hooks = []
    for layer, layer_heads in sorted(by_layer.items()):
        idx = sorted(set(layer_heads))

        def hook(z: torch.Tensor, hook: HookPoint, idx: list[int] = idx) -> torch.Tensor:
            if z.ndim != 4:
                raise ValueError(f"{hook.name} should be [batch, pos, head, d_head], got {tuple(z.shape)}")
            if max(idx) >= z.shape[2]:
                raise ValueError(f"heads {idx} are out of range for {hook.name} with {z.shape[2]} heads")
            z = z.clone()
            z[:, position, idx, :] = 0.0
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    return hooks


def patch_mask_from_boxes(
    boxes: Sequence[tuple[float, float, float, float] | None],
    image_size: int,
    patch_size: int,
    min_overlap: float = 0.1,
) -> torch.Tensor:
    """[N, n_patches] bool: patches whose area is covered by at least `min_overlap` of the box.

    Boxes are (x0, y0, x1, y1) in the model's pixel coordinates (x1, y1 exclusive); None = no text.
    Patches are in row-major order (patch 0 is the top-left one; token = patch + 1).
    """
    grid = image_size // patch_size
    edges = torch.arange(grid + 1, dtype=torch.float64) * patch_size
    masks = torch.zeros(len(boxes), grid * grid, dtype=torch.bool)
    for i, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        ox = (torch.minimum(edges[1:], torch.tensor(x1)) - torch.maximum(edges[:-1], torch.tensor(x0))).clamp(
            min=0
        )
        oy = (torch.minimum(edges[1:], torch.tensor(y1)) - torch.maximum(edges[:-1], torch.tensor(y0))).clamp(
            min=0
        )
        area = oy[:, None] * ox[None, :] / patch_size**2  # [row, col]
        masks[i] = (area >= min_overlap).reshape(-1)
    return masks


def patch_mask_from_twins(
    attacked: torch.Tensor, clean: torch.Tensor, patch_size: int, threshold: float = 0.05
) -> torch.Tensor:
    """[N, n_patches] bool: patches where attacked and clean pixels differ.

    A patch counts when the mean absolute difference over its pixels and channels exceeds `threshold`
    (in the units of the pixel tensors, e.g. normalised CLIP inputs).
    """
    if attacked.shape != clean.shape or attacked.ndim != 4:
        raise ValueError(
            f"twins must be two [N, C, S, S] tensors of one shape, got {tuple(attacked.shape)} and {tuple(clean.shape)}"
        )
    diff = (attacked.float() - clean.float()).abs().mean(1)  # [N, S, S]
    pooled = torch.nn.functional.avg_pool2d(diff[:, None], patch_size)[:, 0]  # [N, g, g]
    return (pooled > threshold).reshape(attacked.shape[0], -1)


@torch.no_grad()
def cls_text_attention(
    model: HookedViT,
    attacked: torch.Tensor,
    text_patches: torch.Tensor,
    clean: torch.Tensor | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """[n_layers, n_heads] mean attention from CLS to the text patches on attacked images.

    With `clean` twins the same patches' attention on the clean images is subtracted, so a head
    scores by how much the text DRAWS attention rather than by where it happens to look anyway.
    """
    if text_patches.shape[0] != attacked.shape[0]:
        raise ValueError("one text-patch mask per attacked image is needed")
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    device = next(model.parameters()).device

    def mass(pixels: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
        for start in range(0, pixels.shape[0], batch_size):
            x = pixels[start : start + batch_size].to(device)
            mask = text_patches[start : start + batch_size].to(device).double()  # [b, n_patches]
            _, cache = model.run_with_cache(x, names_filter=names)
            for layer, name in enumerate(names):
                from_cls = cache[name][:, :, 0, 1:].double()  # [b, head, n_patches]
                total[layer] += torch.einsum("bhp,bp->h", from_cls, mask).cpu()
        return total / pixels.shape[0]

    scores = mass(attacked)
    if clean is not None:
        scores = scores - mass(clean)
    return scores


def top_heads(scores: torch.Tensor, n: int, layers: Sequence[int] | None = None) -> list[Head]:
    """The n (layer, head) pairs with the highest score, optionally only in `layers`."""
    s = scores.double().clone()
    if layers is not None:
        keep = torch.zeros(s.shape[0], dtype=torch.bool)
        keep[list(layers)] = True
        s[~keep] = float("-inf")
    order = torch.sort(-s.reshape(-1), stable=True).indices[:n]
    n_heads = s.shape[1]
    heads = [(int(i) // n_heads, int(i) % n_heads) for i in order if s.reshape(-1)[i] != float("-inf")]
    if len(heads) < n:
        raise ValueError(f"only {len(heads)} heads are eligible but n={n}")
    return heads
