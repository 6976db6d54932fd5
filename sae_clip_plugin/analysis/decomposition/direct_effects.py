"""The image embedding as an exact sum of direct contributions (Gandelsman, Efros & Steinhardt, ICLR 2024).

CLIP's image embedding is `ln_post(pooled residual) @ W_proj + b_proj`, and the final residual stream is
the stream entering block 0 plus every attention head's and MLP neuron's output plus the output
biases. With ln_post's scale frozen at its value on the image (its centring is linear), each of those
writes contributes linearly to the embedding, so the embedding splits exactly into:

- `embed`: the stream entering block 0 (after ln_pre: where CLIP's residual stream starts);
- `heads[b, layer, head, token]`: what a head moves from source `token` into the pooled position
  (attention weight x the token's value through W_O), the per-token maps of Gandelsman et al.;
- `neurons[b, layer, neuron]` (kept factorised as `neuron_acts` x `neuron_readout`): an MLP neuron's activation at the pooled position x its W_out row;
- `attn_bias[b, layer]`, `mlp_bias[b, layer]`: b_O and b_out of each block;
- `constant[b]`: ln_post's bias and the projection bias.

`direct_logit_attribution` projects the same terms onto zero-shot class directions with CLIP's
logit scale and the embedding's frozen norm, so they sum to the zero-shot logits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from sae_clip_plugin.model.activation_cache import STREAM_START

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


@dataclass
class EmbeddingDecomposition:
    """Direct contributions to the image embedding (or to whatever it was projected onto), `[..., out]`.

    The per-neuron terms are kept factorised (`neuron_acts` x `neuron_readout`, one row of W_out through
    ln_post and the projection per neuron) because materialised they are large; `neurons` builds them.
    """

    embed: torch.Tensor  # [batch, out]
    heads: torch.Tensor  # [batch, layer, head, token, out]
    neuron_acts: torch.Tensor  # [batch, layer, neuron]: activation at the pooled position / ln_post scale
    neuron_readout: torch.Tensor  # [layer, neuron, out]
    attn_bias: torch.Tensor  # [batch, layer, out]
    mlp_bias: torch.Tensor  # [batch, layer, out]
    constant: torch.Tensor  # [batch, out]

    @property
    def neurons(self) -> torch.Tensor:
        """[batch, layer, neuron, out]: each MLP neuron's direct contribution."""
        return self.neuron_acts[..., None] * self.neuron_readout

    def mlp_neuron_totals(self) -> torch.Tensor:
        """[batch, layer, out]: the neurons' contributions summed per layer (biases excluded)."""
        return torch.einsum("bln,lno->blo", self.neuron_acts, self.neuron_readout)

    def total(self) -> torch.Tensor:
        """The sum of every contribution: the image embedding (or its projection), [batch, out]."""
        attn, mlp = self.layer_totals()
        return self.embed + attn.sum(1) + mlp.sum(1) + self.constant

    def head_totals(self) -> torch.Tensor:
        """[batch, layer, head, out]: each head's contribution summed over source tokens."""
        return self.heads.sum(3)

    def layer_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """([batch, layer, out], [batch, layer, out]): each block's attention and MLP contribution, biases included."""
        return self.heads.sum((2, 3)) + self.attn_bias, self.mlp_neuron_totals() + self.mlp_bias

    def scaled(self, factor: torch.Tensor) -> EmbeddingDecomposition:
        """Every term times a per-image factor ([batch]); linear, so the sum scales too."""

        def scale(t: torch.Tensor) -> torch.Tensor:
            return t * factor.reshape(-1, *([1] * (t.ndim - 1))).to(t)

        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return EmbeddingDecomposition(
            **{k: v if k == "neuron_readout" else scale(v) for k, v in values.items()}
        )


def _pool_weights(model: HookedViT, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """[batch, token]: pooled = sum_p w_p * LN_post(resid_p) (or LN_post(sum_p w_p resid_p)); here w_p / scale."""
    cfg = model.cfg
    scale = cache["ln_post.hook_scale"].to(torch.float64)
    batch = scale.shape[0]
    weights = torch.zeros(batch, cfg.n_tokens, dtype=torch.float64, device=scale.device)
    if cfg.pool_type == "tok":
        weights[:, 0] = 1.0
    elif cfg.pool_type == "avg":
        weights[:, 1:] = 1.0 / cfg.n_patches
    else:
        raise ValueError(
            f"pool_type={cfg.pool_type!r} returns one embedding per token, so there is no single image "
            "embedding to decompose; decompose a model with pool_type 'tok' or 'avg'"
        )
    if cfg.final_ln_after_pool:  # one scale, the pooled vector's: [batch, 1]
        return weights / scale.reshape(batch, 1)
    return weights / scale.reshape(batch, cfg.n_tokens)


def _readout(model: HookedViT) -> tuple[torch.Tensor, torch.Tensor]:
    """(R [d_model, d_embed], c [d_embed]): embedding = ((pooled centred / scale) @ R) + c."""
    ln = model.ln_post
    d = model.cfg.d_model
    w = getattr(ln, "w", None)
    b = getattr(ln, "b", None)
    dtype = torch.float64
    w = torch.ones(d, dtype=dtype) if w is None else w.detach().to(dtype).cpu()
    b = torch.zeros(d, dtype=dtype) if b is None else b.detach().to(dtype).cpu()
    if model.cfg.d_embed is None:
        return torch.diag(w), b
    W_proj = model.W_proj.detach().to(dtype).cpu()
    return w[:, None] * W_proj, b @ W_proj + model.b_proj.detach().to(dtype).cpu()


def direction_readout(model: HookedViT, directions: torch.Tensor) -> torch.Tensor:
    """[n, d_embed]: what each residual-stream direction ([n, d_model]) adds to the image embedding along the
    direct path (centred by ln_post, times its weight, through the projection), per unit of ln_post's scale.

    The direct path only: later blocks may also read the direction. For a feature's decoder row this is the
    decomposition's view of the feature (which concepts it writes towards directly).
    """
    R, _ = _readout(model)
    return _centred(directions.detach().to(torch.float64).cpu()) @ R


def _centred(weight: torch.Tensor) -> torch.Tensor:
    """Rows centred over d_model: what LayerNorm's centring does to anything written to the stream."""
    return weight - weight.mean(dim=-1, keepdim=True)


def cache_names(model: HookedViT) -> list[str]:
    """The hooks `decompose_image_embedding` reads."""
    names = [STREAM_START, "ln_post.hook_scale"]
    for layer in range(model.cfg.n_layers):
        names += [
            f"blocks.{layer}.attn.hook_v",
            f"blocks.{layer}.attn.hook_pattern",
            f"blocks.{layer}.mlp.hook_post",
        ]
    return names


@torch.no_grad()
def decompose_image_embedding(
    model: HookedViT,
    pixel_values: torch.Tensor,
    *,
    project_onto: torch.Tensor | None = None,
) -> EmbeddingDecomposition:
    """Direct contributions to `model(pixel_values)` (see the module docstring), in float64.

    `project_onto` ([d_embed, n]) maps every term to n outputs first (class directions, a feature's
    decoder direction in embedding space): the per-(layer, head, token) and per-neuron terms then
    hold n numbers instead of d_embed, which is what keeps ViT-B/32 batches small (unprojected, the
    per-token head terms of 64 ViT-B/32 images take about 2 GB).
    """
    return _decompose(model, pixel_values, project_onto)[0]


@torch.no_grad()
def direct_logit_attribution(
    model: HookedViT, pixel_values: torch.Tensor, class_weights: torch.Tensor
) -> EmbeddingDecomposition:
    """Each direct contribution's share of the zero-shot logits (they sum to `model.zero_shot_logits`).

    `class_weights` is `[d_embed, n_classes]` from `model.zero_shot_weights`. The logit of class k is
    `logit_scale * e @ w_k / |e|`; with the embedding norm |e| frozen (as ln_post's scale is), each
    term's share is `logit_scale * term @ w_k / |e|`.
    """
    projected, embedding = _decompose(model, pixel_values, class_weights)
    return projected.scaled(float(model.logit_scale) / embedding.double().norm(dim=-1))


def _decompose(
    model: HookedViT, pixel_values: torch.Tensor, project_onto: torch.Tensor | None
) -> tuple[EmbeddingDecomposition, torch.Tensor]:
    embedding, cache = model.run_with_cache(pixel_values, names_filter=cache_names(model))
    device = embedding.device

    def read(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(device=device, dtype=torch.float64)

    R, const = (t.to(device) for t in _readout(model))
    if project_onto is not None:
        P = read(project_onto)
        if P.ndim != 2 or P.shape[0] != R.shape[1]:
            raise ValueError(
                f"project_onto must be [{R.shape[1]}, n] (embedding width first), got {tuple(P.shape)}"
            )
        R, const = R @ P, const @ P
    alpha = _pool_weights(model, cache)  # [batch, token]
    pooled_mass = alpha.sum(1, keepdim=True)  # [batch, 1]: how much of a bias reaches the embedding
    embed = torch.einsum("bp,bpd,do->bo", alpha, _centred(read(cache[STREAM_START])), R)
    heads, acts, readouts, attn_bias, mlp_bias = [], [], [], [], []
    for layer, block in enumerate(model.blocks):
        pattern = read(cache[f"blocks.{layer}.attn.hook_pattern"])  # [b, head, dest, src]
        v = read(cache[f"blocks.{layer}.attn.hook_v"])  # [b, src, head, d_head]
        head_readout = torch.einsum("hed,do->heo", _centred(read(block.attn.W_O)), R)  # [head, d_head, out]
        moved = torch.einsum("bshe,heo->bhso", v, head_readout)  # each token's value, read out
        weight = torch.einsum("bp,bhps->bhs", alpha, pattern)  # pooled attention to each source token
        heads.append(moved * weight[..., None])
        attn_bias.append(pooled_mass * (_centred(read(block.attn.b_O)) @ R))
        acts.append(torch.einsum("bp,bpn->bn", alpha, read(cache[f"blocks.{layer}.mlp.hook_post"])))
        readouts.append(_centred(read(block.mlp.W_out)) @ R)  # [d_mlp, out]
        mlp_bias.append(pooled_mass * (_centred(read(block.mlp.b_out)) @ R))
    decomposition = EmbeddingDecomposition(
        embed=embed,
        heads=torch.stack(heads, 1),
        neuron_acts=torch.stack(acts, 1),
        neuron_readout=torch.stack(readouts),
        attn_bias=torch.stack(attn_bias, 1),
        mlp_bias=torch.stack(mlp_bias, 1),
        constant=const.expand(embed.shape[0], -1).clone(),
    )
    return decomposition, embedding
