"""Finish a HookedViT forward from a residual stream, computing the last block for the CLS token only.

With CLS pooling the image embedding reads only token 0 after the last block, so that block needs
queries, attention output and MLP for CLS alone (keys and values still come from every token):
about a sixth of a block's work. Used only when nothing can observe the difference: CLS pooling,
the model's own ViTBlock, no hook or spliced SAE in the last block, ln_post or the output hooks.
Otherwise the model's own forward runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformer_lens.hook_points import HookPoint

from sae_clip_plugin.model.blocks import ViTBlock, hooks_active

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def cls_shortcut_ok(model: HookedViT) -> bool:
    cfg, tl = model.cfg, model.tl_cfg
    if (
        cfg.pool_type != "tok"
        or tl.use_attn_result
        or tl.use_split_qkv_input
        or tl.use_attn_in
        or tl.use_hook_mlp_in
    ):
        return False
    block = model.blocks[-1]
    if type(block) is not ViTBlock:
        return False
    points = []
    for module in (block, model.ln_post, model.hook_pooled, model.hook_image_embed):
        for name, sub in module.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("hook_") and not isinstance(sub, HookPoint):
                return False  # a spliced SAE or other replacement
            if isinstance(sub, HookPoint):
                points.append(sub)
    return not hooks_active(*points)


def last_block_cls(block: ViTBlock, resid: torch.Tensor) -> torch.Tensor:
    """Block output at token 0 only ([B, 1, d]), as ViTBlock's fused path computes it."""
    attn = block.attn
    batch, pos, d_model = resid.shape
    n_heads, d_head = attn.cfg.n_heads, attn.cfg.d_head

    def flat(w: torch.Tensor) -> torch.Tensor:
        return w.permute(0, 2, 1).reshape(n_heads * d_head, d_model)

    normed = block.ln1(resid)
    q = F.linear(normed[:, :1], flat(attn.W_Q), attn.b_Q.reshape(-1))
    w_kv = torch.cat([flat(attn.W_K), flat(attn.W_V)])
    b_kv = torch.cat([attn.b_K.reshape(-1), attn.b_V.reshape(-1)])
    kv = F.linear(normed, w_kv, b_kv).view(batch, pos, 2, n_heads, d_head).permute(2, 0, 3, 1, 4)
    q = q.view(batch, 1, n_heads, d_head).transpose(1, 2)
    z = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=1.0 / attn.attn_scale)
    z = z.transpose(1, 2).reshape(batch, 1, n_heads * d_head)
    mid = resid[:, :1] + F.linear(z, attn.W_O.reshape(n_heads * d_head, d_model).T, attn.b_O)
    return mid + block.mlp(block.ln2(mid))


def finish_forward(model: HookedViT, resid: torch.Tensor, start_at_layer: int) -> torch.Tensor:
    """`model(resid, start_at_layer=...)` (the image embedding), with the CLS-only last block when safe."""
    n = model.cfg.n_layers
    if start_at_layer >= n or not cls_shortcut_ok(model):
        return model(resid, start_at_layer=start_at_layer)
    if start_at_layer < n - 1:
        resid = model(resid, start_at_layer=start_at_layer, stop_at_layer=n - 1)
    pooled = model.pool(last_block_cls(model.blocks[-1], resid))
    return model.project(pooled)
