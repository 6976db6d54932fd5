"""Weight layout helpers shared by the converters, and optional weight processing.

transformer_lens' own ProcessWeights assumes a token embedding and an unembedding; a CLIP image
tower has neither (a patch conv in, a projection out), so the two foldings it needs live here.
"""

from __future__ import annotations

import torch

from sae_clip_plugin.model.config import HookedViTConfig

StateDict = dict[str, torch.Tensor]


def attention_weights(
    prefix: str,
    n_heads: int,
    w_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    b_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    w_out: torch.Tensor,
    b_out: torch.Tensor,
) -> StateDict:
    """nn.Linear-layout q/k/v/out projections ([out, in]) -> transformer_lens per-head tensors."""
    d_model = w_out.shape[0]
    d_head = d_model // n_heads
    out: StateDict = {}
    for name, w, b in zip("QKV", w_qkv, b_qkv, strict=True):
        out[f"{prefix}W_{name}"] = w.T.reshape(d_model, n_heads, d_head).permute(1, 0, 2).contiguous()
        out[f"{prefix}b_{name}"] = b.reshape(n_heads, d_head).clone()
    out[f"{prefix}W_O"] = w_out.T.reshape(n_heads, d_head, d_model).contiguous()
    out[f"{prefix}b_O"] = b_out.clone()
    return out


def mlp_weights(
    prefix: str, w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor
) -> StateDict:
    """nn.Linear-layout fc1/fc2 -> transformer_lens W_in [d_model, d_mlp], W_out [d_mlp, d_model]."""
    return {
        f"{prefix}W_in": w_in.T.contiguous(),
        f"{prefix}b_in": b_in.clone(),
        f"{prefix}W_out": w_out.T.contiguous(),
        f"{prefix}b_out": b_out.clone(),
    }


def layer_norm_weights(prefix: str, weight: torch.Tensor, bias: torch.Tensor) -> StateDict:
    return {f"{prefix}w": weight.clone(), f"{prefix}b": bias.clone()}


def fold_layer_scale(
    sd: StateDict, layer: int, gamma_attn: torch.Tensor | None, gamma_mlp: torch.Tensor | None
) -> None:
    """LayerScale multiplies a block's output: fold it into the output projections, exactly.

    Folding keeps `hook_attn_out` / `hook_mlp_out` equal to what is added to the residual stream.
    """
    p = f"blocks.{layer}."
    if gamma_attn is not None:
        sd[p + "attn.W_O"] = sd[p + "attn.W_O"] * gamma_attn
        sd[p + "attn.b_O"] = sd[p + "attn.b_O"] * gamma_attn
    if gamma_mlp is not None:
        sd[p + "mlp.W_out"] = sd[p + "mlp.W_out"] * gamma_mlp
        sd[p + "mlp.b_out"] = sd[p + "mlp.b_out"] * gamma_mlp


def fold_layer_norms(sd: StateDict, cfg: HookedViTConfig) -> StateDict:
    """Fold ln1/ln2 (and ln_post, when a projection follows) gains and biases into the next weights.

    The residual stream is unchanged; ln*.hook_normalized then hold the un-scaled normalised input.
    ln_pre is kept because its output *is* the residual stream.
    """
    sd = dict(sd)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        w, b = sd.pop(p + "ln1.w"), sd.pop(p + "ln1.b")
        for name in "QKV":
            W = sd[p + f"attn.W_{name}"]
            sd[p + f"attn.b_{name}"] = sd[p + f"attn.b_{name}"] + torch.einsum("m,hmd->hd", b, W)
            sd[p + f"attn.W_{name}"] = W * w[None, :, None]
        w, b = sd.pop(p + "ln2.w"), sd.pop(p + "ln2.b")
        sd[p + "mlp.b_in"] = sd[p + "mlp.b_in"] + b @ sd[p + "mlp.W_in"]
        sd[p + "mlp.W_in"] = sd[p + "mlp.W_in"] * w[:, None]
    if cfg.d_embed is not None:
        w, b = sd.pop("ln_post.w"), sd.pop("ln_post.b")
        sd["b_proj"] = sd["b_proj"] + b @ sd["W_proj"]
        sd["W_proj"] = sd["W_proj"] * w[:, None]
    return sd


def center_writing_weights(sd: StateDict, cfg: HookedViTConfig) -> StateDict:
    """Remove the mean over d_model from everything the blocks write to the residual stream.

    Every reader of the stream after ln_pre is a LayerNorm, which subtracts the mean anyway, so the
    output is unchanged while the residual stream values (and hence SAE inputs) are not.
    """
    sd = dict(sd)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        sd[p + "attn.W_O"] = sd[p + "attn.W_O"] - sd[p + "attn.W_O"].mean(-1, keepdim=True)
        sd[p + "attn.b_O"] = sd[p + "attn.b_O"] - sd[p + "attn.b_O"].mean()
        sd[p + "mlp.W_out"] = sd[p + "mlp.W_out"] - sd[p + "mlp.W_out"].mean(-1, keepdim=True)
        sd[p + "mlp.b_out"] = sd[p + "mlp.b_out"] - sd[p + "mlp.b_out"].mean()
    return sd


def fold_value_biases(sd: StateDict, cfg: HookedViTConfig) -> StateDict:
    """Move each layer's value biases into its output bias: b_O += sum_h b_V[h] @ W_O[h], b_V = 0.

    Attention patterns sum to 1, so a value bias adds a constant to the layer's output whatever the
    pattern; folded, hook_v / hook_z / hook_result no longer carry it (transformer_lens' fold_value_biases).
    The layer's output (hook_attn_out) and everything downstream are unchanged.
    """
    sd = dict(sd)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}.attn."
        sd[p + "b_O"] = sd[p + "b_O"] + torch.einsum("hd,hdm->m", sd[p + "b_V"], sd[p + "W_O"])
        sd[p + "b_V"] = torch.zeros_like(sd[p + "b_V"])
    return sd


def process_weights(sd: StateDict, cfg: HookedViTConfig) -> StateDict:
    """Apply the processing the config asks for (all off by default, as in the paper), in transformer_lens' order."""
    if cfg.fold_ln:
        sd = fold_layer_norms(sd, cfg)
    if cfg.center_writing_weights:
        sd = center_writing_weights(sd, cfg)
    if cfg.fold_value_biases:
        sd = fold_value_biases(sd, cfg)
    return sd
