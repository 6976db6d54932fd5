"""HookedViTConfig: everything needed to rebuild a HookedViT, serialisable to JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from transformer_lens.config.hooked_transformer_config import HookedTransformerConfig

from sae_clip_plugin.model.activations import register_activations

POOL_TYPES = ("tok", "avg", "none")


@dataclass
class HookedViTConfig:
    """Shape and wiring of a CLIP vision tower.

    `pool_type` and `final_ln_after_pool` follow open_clip's VisionTransformer; HF CLIP is
    `pool_type="tok"` with `final_ln_after_pool=True` (post_layernorm acts on the pooled CLS only).
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    image_size: int
    patch_size: int
    d_embed: int | None = None  # joint embedding width; None when the source has no projection
    act_fn: str = "gelu"
    eps: float = 1e-5
    n_channels: int = 3
    ln_pre: bool = True
    pool_type: str = "tok"
    final_ln_after_pool: bool = False
    model_spec: str | None = None
    source: str = "random"
    fold_ln: bool = False
    center_writing_weights: bool = False
    fold_value_biases: bool = False
    layer_scale_folded: bool = False  # LayerScale gains were folded into W_O/b_O and W_out/b_out
    dtype: str = "float32"
    preprocess: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"pool_type must be one of {POOL_TYPES}, got {self.pool_type!r}")

    # ------------------------------------------------------------------------------------------
    # what transformer_lens' ActivationCache asks of `model.cfg` (HookedTransformerConfig's names)

    # class attributes, not dataclass fields: neither is serialised
    attn_only = False  # every CLIP block has an MLP
    device = None  # the model's device, kept current by HookedViT (torch.device after .to / .cuda)

    @property
    def normalization_type(self) -> str:
        """ "LNPre" once LayerNorm weights are folded away (fold_ln), else "LN", as in transformer_lens."""
        return "LNPre" if self.fold_ln else "LN"

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid_size**2

    @property
    def n_tokens(self) -> int:
        """CLS token (index 0) plus the patches in row-major order."""
        return 1 + self.n_patches

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def weight_processing(self) -> dict[str, bool]:
        return {
            "fold_ln": self.fold_ln,
            "center_writing_weights": self.center_writing_weights,
            "fold_value_biases": self.fold_value_biases,
        }

    def to_dict(self) -> dict[str, Any]:
        """Fields plus the derived sizes, so the JSON is readable on its own."""
        out = dataclasses.asdict(self)
        out.update(d_head=self.d_head, n_patches=self.n_patches, n_tokens=self.n_tokens)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HookedViTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_transformer_lens(self) -> HookedTransformerConfig:
        """The config transformer_lens' TransformerBlock expects: bidirectional, no token vocabulary."""
        register_activations()
        return HookedTransformerConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_ctx=self.n_tokens,
            d_head=self.d_head,
            n_heads=self.n_heads,
            d_mlp=self.d_mlp,
            act_fn=self.act_fn,
            eps=self.eps,
            d_vocab=1,
            attention_dir="bidirectional",
            normalization_type=self.normalization_type,
            positional_embedding_type="standard",
            model_name=self.model_spec or "clip-vit",
            original_architecture="CLIPVisionTransformer",
            dtype=self.torch_dtype,
            device="cpu",
            default_prepend_bos=False,
        )
