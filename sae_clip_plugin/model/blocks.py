"""transformer_lens blocks with a fused fast path that runs only while none of their hooks is set.

Same parameters, same hook names, same results: when any hook inside a component is active the
component runs transformer_lens' own (explicit, fully hooked) code; otherwise it uses the fused
kernels open_clip uses (layer_norm, one QKV matmul, scaled_dot_product_attention). This is what
keeps HookedViT as fast as open_clip for plain forwards and for caching a few residual streams.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformer_lens.components import Attention, LayerNorm, LayerNormPre, TransformerBlock
from transformer_lens.hook_points import HookPoint


def hooks_active(*points: torch.nn.Module) -> bool:
    """Any torch hook at all (transformer_lens hooks, pre-hooks, backward hooks), or a hook point
    replaced by another module (a spliced SAE), needs the explicit path."""
    return any(
        type(p) is not HookPoint or p._forward_hooks or p._forward_pre_hooks or p._backward_hooks
        for p in points
    )


class FastLayerNorm(LayerNorm):
    """LayerNorm with w, b; F.layer_norm unless hook_scale / hook_normalized are in use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hooks_active(self.hook_scale, self.hook_normalized) or x.dtype not in (
            torch.float32,
            torch.float64,
        ):
            return super().forward(x)
        return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)


class FastLayerNormPre(LayerNormPre):
    """Weightless LayerNorm (after fold_ln); F.layer_norm unless its hooks are in use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hooks_active(self.hook_scale, self.hook_normalized) or x.dtype not in (
            torch.float32,
            torch.float64,
        ):
            return super().forward(x)
        return F.layer_norm(x, (x.shape[-1],), None, None, self.eps)


class FastAttention(Attention):
    """Bidirectional attention; fused QKV + SDPA unless a q/k/v/z/scores/pattern/result hook is set."""

    def _hook_points(self) -> tuple[HookPoint, ...]:
        return (
            self.hook_q,
            self.hook_k,
            self.hook_v,
            self.hook_z,
            self.hook_attn_scores,
            self.hook_pattern,
            self.hook_result,
        )

    def fast_path_ok(self) -> bool:
        return not (
            self.cfg.use_attn_result or self.cfg.use_split_qkv_input or self.cfg.use_attn_in
        ) and not hooks_active(*self._hook_points())

    def fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, pos, d_model = x.shape
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head
        w_qkv = torch.cat(
            [w.permute(0, 2, 1).reshape(n_heads * d_head, d_model) for w in (self.W_Q, self.W_K, self.W_V)]
        )
        b_qkv = torch.cat([self.b_Q.reshape(-1), self.b_K.reshape(-1), self.b_V.reshape(-1)])
        qkv = F.linear(x, w_qkv, b_qkv).view(batch, pos, 3, n_heads, d_head).permute(2, 0, 3, 1, 4)
        z = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=1.0 / self.attn_scale)
        z = z.transpose(1, 2).reshape(batch, pos, n_heads * d_head)
        return F.linear(z, self.W_O.reshape(n_heads * d_head, d_model).T, self.b_O)


class ViTBlock(TransformerBlock):
    """Pre-LN block as in transformer_lens, with ln1 computed once for q, k and v."""

    def __init__(self, cfg, block_index: int):
        super().__init__(cfg, block_index)
        norm = FastLayerNormPre if cfg.normalization_type == "LNPre" else FastLayerNorm
        self.ln1, self.ln2 = norm(cfg), norm(cfg)
        self.attn = FastAttention(cfg, "global", block_index)

    def forward(self, resid_pre: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
        if args or kwargs or self.cfg.use_split_qkv_input or self.cfg.use_attn_in:
            return super().forward(resid_pre, *args, **kwargs)
        resid_pre = self.hook_resid_pre(resid_pre)
        normed = self.ln1(resid_pre)
        attn_out = (
            self.attn.fused_forward(normed) if self.attn.fast_path_ok() else self.attn(normed, normed, normed)
        )
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn_out))
        mlp_in = self.hook_mlp_in(resid_mid.clone()) if self.cfg.use_hook_mlp_in else resid_mid
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(mlp_in)))
        return self.hook_resid_post(resid_mid + mlp_out)
