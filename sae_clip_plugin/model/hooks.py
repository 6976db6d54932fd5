"""Where a hook sits in HookedViT's forward pass: its block, and how far the forward must run to fire it.

One place for what several analyses need (how far to run for a cache, where a cached prefix can resume).
Hook names are transformer_lens': `blocks.{L}.<point>` inside block L; `hook_patch_embed`, `hook_embed`,
`hook_pos_embed` and `ln_pre.*` before block 0; `ln_post.*`, `hook_pooled` and `hook_image_embed` after the last.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")
PRE_BLOCK_PREFIXES = ("hook_patch_embed", "hook_embed", "hook_pos_embed", "ln_pre")
POST_BLOCK_PREFIXES = ("ln_post", "hook_pooled", "hook_image_embed")
# hooks whose activation is the residual stream or what a block adds to it (a direction there is a stream direction)
STREAM_HOOK_TYPES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


def hook_layer(hook_name: str) -> int | None:
    """The block index L of `blocks.L.*`; None for hooks outside the blocks."""
    match = BLOCK_HOOK.match(hook_name)
    return int(match.group(1)) if match else None


def hook_type(hook_name: str) -> str:
    """The hook name without its block prefix (`hook_resid_post`, `mlp.hook_post`, ...)."""
    match = BLOCK_HOOK.match(hook_name)
    return match.group(2) if match else hook_name


def on_residual_stream(hook_name: str) -> bool:
    """True for `blocks.L.<type>` hooks of `STREAM_HOOK_TYPES`."""
    return hook_layer(hook_name) is not None and hook_type(hook_name) in STREAM_HOOK_TYPES


def stop_layer(hook_name: str) -> int | None:
    """The smallest `stop_at_layer` after which the hook has fired: 0 before block 0, L + 1 in block L, None (the
    whole forward pass) after the blocks."""
    layer = hook_layer(hook_name)
    if layer is not None:
        return layer + 1
    if hook_name.startswith(PRE_BLOCK_PREFIXES):
        return 0
    return None


def stop_at_layer_for(hook_names: Sequence[str]) -> int | None:
    """The smallest `stop_at_layer` that still fires every hook (None: run the whole model)."""
    stops = [stop_layer(name) for name in hook_names]
    if any(s is None for s in stops):
        return None
    return max(stops, default=None)  # type: ignore[type-var]


def first_layer(hook_names: Sequence[str], n_layers: int) -> int:
    """The earliest block any hook sits in: 0 for pre-block hooks, n_layers after the blocks or without hooks.

    Everything before that block is the same with and without the hooks, so a cached prefix can be reused.
    """
    layers = []
    for name in hook_names:
        layer = hook_layer(name)
        if layer is None:
            layer = n_layers if name.startswith(POST_BLOCK_PREFIXES) else 0
        layers.append(layer)
    return min(layers, default=n_layers)
