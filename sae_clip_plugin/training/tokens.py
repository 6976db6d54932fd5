"""Token selection and hook geometry: which rows of a hook's activation an SAE trains on.

Token 0 is CLS, patches follow in row-major order (docs/conventions.md). A hook is usable for an SAE
when its activation is per token, [batch, tokens, ...]; heads are flattened into d_in as sae_lens does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sae_clip_plugin.model.hooks import stop_at_layer_for
from sae_clip_plugin.model.tokens import TOKEN_SELECTIONS, TokenSelection

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def check_token_selection(token_selection: str) -> str:
    if token_selection not in TOKEN_SELECTIONS:
        raise ValueError(
            f"token_selection must be one of {TOKEN_SELECTIONS} (CLS is token 0), got {token_selection!r}"
        )
    return token_selection


@dataclass(frozen=True)
class HookGeometry:
    """Where the tokens of one hook are and how wide one token's activation is."""

    hook_name: str
    token_selection: str
    n_tokens: int  # tokens the hook carries (n_tokens of the model, or n_patches for hook_patch_embed)
    has_cls: bool
    d_in: int

    @property
    def token_slice(self) -> slice:
        return TokenSelection(self.token_selection).slice(self.has_cls)

    @property
    def context_size(self) -> int:
        """Tokens per image after selection (sae_lens' context_size)."""
        return len(range(self.n_tokens)[self.token_slice])

    @property
    def token_kinds(self) -> list[str]:
        """'cls' or 'patch' for each selected position, so evaluations can split the two."""
        kinds = (["cls"] if self.has_cls else []) + ["patch"] * (self.n_tokens - int(self.has_cls))
        return kinds[self.token_slice]

    def select(self, acts: torch.Tensor) -> torch.Tensor:
        """[batch, n_tokens, ...] -> [batch, context_size, d_in]."""
        acts = acts[:, self.token_slice]
        return acts.reshape(acts.shape[0], acts.shape[1], -1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hook_name": self.hook_name,
            "token_selection": self.token_selection,
            "n_tokens": self.n_tokens,
            "has_cls": self.has_cls,
            "d_in": self.d_in,
            "context_size": self.context_size,
        }


def hook_geometry(
    model: HookedViT, hook_names: Sequence[str], token_selection: str
) -> dict[str, HookGeometry]:
    """Probe the hooks with one blank image and check the token selection fits each of them.

    Raises before any real work: unknown hooks (the model's own message, with close matches), hooks
    without a token axis (pooled / embedding / attention-pattern hooks) and `cls` on a hook without CLS.
    """
    check_token_selection(token_selection)
    hook_names = list(hook_names)
    if not hook_names:
        raise ValueError("no hook given; name one, e.g. hook_name='blocks.6.hook_resid_post'")
    model.check_hook_names(hook_names)
    cfg = model.cfg
    param = next(model.parameters())
    probe = torch.zeros(
        1, cfg.n_channels, cfg.image_size, cfg.image_size, dtype=param.dtype, device=param.device
    )
    with torch.no_grad():
        _, cache = model.run_with_cache(
            probe, names_filter=hook_names, stop_at_layer=stop_at_layer_for(hook_names)
        )
    out = {}
    for name in hook_names:
        shape = tuple(cache[name].shape)
        if len(shape) < 3 or shape[1] not in (cfg.n_tokens, cfg.n_patches):
            raise ValueError(
                f"hook {name!r} has activations of shape {shape}, with no token axis of {cfg.n_tokens} tokens "
                "after the batch axis, so token selection does not apply; train on a per-token hook such as "
                "'blocks.L.hook_resid_post', 'blocks.L.hook_mlp_out' or 'blocks.L.attn.hook_z'"
            )
        has_cls = shape[1] == cfg.n_tokens
        if token_selection == "cls" and not has_cls:
            raise ValueError(
                f"hook {name!r} holds only the {cfg.n_patches} patch tokens (no CLS), so token_selection='cls' "
                "does not fit; use token_selection='patches' (or 'all') or a hook after the class token is added"
            )
        d_in = 1
        for size in shape[2:]:
            d_in *= size
        out[name] = HookGeometry(name, token_selection, shape[1], has_cls, d_in)
    return out
