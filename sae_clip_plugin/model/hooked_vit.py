"""HookedViT: CLIP's vision transformer as a transformer_lens HookedRootModule."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from sae_clip_plugin.model.activation_cache import VisionActivationCache
from sae_clip_plugin.model.blocks import FastLayerNorm, FastLayerNormPre, ViTBlock
from sae_clip_plugin.model.config import HookedViTConfig
from sae_clip_plugin.model.embeddings import PatchEmbed, PosEmbed
from sae_clip_plugin.model.hf_convert import hooked_vit_from_hf
from sae_clip_plugin.model.hooks import stop_at_layer_for
from sae_clip_plugin.model.open_clip_convert import hooked_vit_from_open_clip
from sae_clip_plugin.model.preprocess import build_transform
from sae_clip_plugin.model.specs import load_model_from_spec
from sae_clip_plugin.model.text import TextTower, zero_shot_logits
from sae_clip_plugin.model.tokens import TokenSelection, TokenSpec

# transformer_lens hooks that fire only when a config flag is on (as in HookedTransformer)
OPTIONAL_HOOKS: dict[str, tuple[str, ...]] = {
    "use_attn_result": ("attn.hook_result",),
    "use_split_qkv_input": ("hook_q_input", "hook_k_input", "hook_v_input"),
    "use_attn_in": ("hook_attn_in",),
    "use_hook_mlp_in": ("hook_mlp_in",),
}


class HookedViT(HookedRootModule):
    """A CLIP image tower whose every intermediate is a transformer_lens HookPoint.

    Hook names are transformer_lens' (`blocks.{l}.hook_resid_post`, `blocks.{l}.attn.hook_pattern`,
    ...) plus CLIP's extras: `hook_patch_embed`, `hook_embed` (class token + patches), `hook_pos_embed`,
    `ln_pre.*`, `ln_post.*`, `hook_pooled` and `hook_image_embed`. Token 0 is CLS; patches follow
    in row-major order. The text tower, when the source has one, stays a plain module in `text`.
    """

    def __init__(
        self, cfg: HookedViTConfig, text: TextTower | None = None, preprocess: Callable | None = None
    ):
        super().__init__()
        self.cfg = cfg
        tl_cfg = cfg.to_transformer_lens()
        self.tl_cfg = tl_cfg
        self.embed = PatchEmbed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.hook_patch_embed = HookPoint()  # [batch, n_patches, d_model]
        self.hook_embed = HookPoint()  # [batch, n_tokens, d_model]: class token, then patches
        self.hook_pos_embed = HookPoint()  # [batch, n_tokens, d_model]
        self.ln_pre = FastLayerNorm(tl_cfg) if cfg.ln_pre else None
        self.blocks = nn.ModuleList([ViTBlock(tl_cfg, block_index=i) for i in range(cfg.n_layers)])
        self.ln_post = FastLayerNormPre(tl_cfg) if self._ln_post_folded else FastLayerNorm(tl_cfg)
        self.hook_pooled = HookPoint()  # [batch, d_model] ([batch, n_tokens, d_model] for pool_type "none")
        if cfg.d_embed is not None:
            self.W_proj = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_embed, dtype=cfg.torch_dtype))
            self.b_proj = nn.Parameter(torch.zeros(cfg.d_embed, dtype=cfg.torch_dtype))
        self.hook_image_embed = HookPoint()  # [batch, d_embed]: what encode_image returns
        self.text = text
        self._preprocess = preprocess
        self.setup()
        cfg.device = self.embed.W_E.device

    @property
    def _ln_post_folded(self) -> bool:
        return self.cfg.fold_ln and self.cfg.d_embed is not None

    # ----------------------------------------------------------------------------------------
    # constructors (thin: the converters own the format knowledge)

    @classmethod
    def from_open_clip(cls, model_or_name: Any, pretrained: str | None = None, **kwargs: Any) -> HookedViT:
        """From an open_clip CLIP / VisionTransformer, or a model name and pretrained tag."""
        return hooked_vit_from_open_clip(model_or_name, pretrained=pretrained, model_cls=cls, **kwargs)

    @classmethod
    def from_hf(cls, repo_id_or_model: Any, **kwargs: Any) -> HookedViT:
        """From a transformers CLIPModel / CLIPVisionModel(WithProjection), or a hub repo id."""
        return hooked_vit_from_hf(repo_id_or_model, model_cls=cls, **kwargs)

    @classmethod
    def from_pretrained(cls, spec: str, **kwargs: Any) -> HookedViT:
        """From a model spec: `open_clip:<name>/<tag>`, `hf:<repo id>` or `toy`."""
        return load_model_from_spec(spec, model_cls=cls, **kwargs)

    # ----------------------------------------------------------------------------------------
    # forward

    @property
    def preprocess(self) -> Callable:
        """The source's eval image transform (PIL image -> normalised tensor)."""
        if self._preprocess is None:
            self._preprocess = build_transform(self.cfg.preprocess or {"size": self.cfg.image_size})
        return self._preprocess

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """Fail early, naming the expected shape, rather than deep inside a conv."""
        c, s = self.cfg.n_channels, self.cfg.image_size
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"HookedViT expects a tensor of pixel values [batch, {c}, {s}, {s}], got {type(pixel_values).__name__}; "
                "turn PIL images into tensors with model.preprocess"
            )
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (c, s, s):
            raise ValueError(
                f"HookedViT expects pixel values of shape [batch, {c}, {s}, {s}], got {tuple(pixel_values.shape)}; "
                f"resize/crop images to {s}x{s} with model.preprocess (and add a batch dimension for one image)"
            )
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel values must be floating point (got {pixel_values.dtype}); use model.preprocess to normalise"
            )

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels -> the residual stream entering block 0 ([batch, n_tokens, d_model])."""
        self.check_pixel_values(pixel_values)
        pixel_values = pixel_values.to(self.embed.W_E.dtype)
        patches = self.hook_patch_embed(self.embed(pixel_values))
        tokens = torch.cat([self.embed.class_tokens(patches.shape[0], patches), patches], dim=1)
        tokens = self.hook_embed(tokens)
        resid = tokens + self.hook_pos_embed(self.pos_embed(tokens.shape[0]))
        return self.ln_pre(resid) if self.ln_pre is not None else resid

    def pool(self, resid: torch.Tensor) -> torch.Tensor:
        """Final residual stream -> pooled features, in open_clip's order of pooling and ln_post."""
        if self.cfg.final_ln_after_pool:
            return self.ln_post(self._select_pooled(resid))
        return self._select_pooled(self.ln_post(resid))

    def _select_pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool_type == "tok":
            return x[:, 0]
        if self.cfg.pool_type == "avg":
            return x[:, 1:].mean(dim=1)
        return x

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.cfg.d_embed is None:
            return pooled
        return pooled @ self.W_proj + self.b_proj

    def _layer_index(self, layer: int | None, name: str) -> int | None:
        if layer is None:
            return None
        n = self.cfg.n_layers
        if not -n <= layer <= n:
            raise ValueError(f"{name}={layer} is out of range for a model with {n} layers")
        return layer % n if layer < 0 else layer

    def forward(
        self,
        pixel_values: torch.Tensor,
        *,
        normalize: bool = False,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
    ) -> torch.Tensor:
        """Image embedding as open_clip's `encode_image` (unnormalised unless `normalize=True`).

        `stop_at_layer=L` runs blocks 0..L-1 and returns the residual stream after them, computing
        nothing beyond (transformer_lens semantics; negative L counts from the end).
        `start_at_layer=L` takes the residual stream entering block L instead of pixels, so an
        intervention at a late hook needs only the remaining blocks.
        """
        start = self._layer_index(start_at_layer, "start_at_layer") or 0
        stop = self._layer_index(stop_at_layer, "stop_at_layer")
        if start_at_layer is None:
            resid = self.embed_image(pixel_values)
        else:
            expected = (self.cfg.n_tokens, self.cfg.d_model)
            if pixel_values.ndim != 3 or tuple(pixel_values.shape[1:]) != expected:
                raise ValueError(
                    f"with start_at_layer the input is the residual stream [batch, {expected[0]}, {expected[1]}], "
                    f"got {tuple(pixel_values.shape)}"
                )
            resid = pixel_values
        end = self.cfg.n_layers if stop is None else stop
        for block in self.blocks[start:end]:
            resid = block(resid)
        if stop is not None:
            return resid
        embedding = self.hook_image_embed(self.project(self.hook_pooled(self.pool(resid))))
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's name for the forward pass, so code written for open_clip keeps working."""
        return self(pixel_values, normalize=normalize)

    # ----------------------------------------------------------------------------------------
    # what transformer_lens' ActivationCache asks of the model

    @property
    def ln_final(self) -> nn.Module:
        """transformer_lens' name for the final norm: CLIP's ln_post (used by `apply_ln=True`)."""
        return self.ln_post

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> torch.Tensor:
        """Sum of the output biases written to the stream before block `layer` (HookedTransformer's method)."""
        if not 0 <= layer <= self.cfg.n_layers or (mlp_input and layer == self.cfg.n_layers):
            raise ValueError(
                f"layer={layer} (mlp_input={mlp_input}) is out of range for {self.cfg.n_layers} layers"
            )
        b_O = self.blocks[0].attn.b_O
        bias = torch.zeros(self.cfg.d_model, dtype=b_O.dtype, device=b_O.device)
        for block in self.blocks[:layer]:
            bias = bias + block.attn.b_O + (block.mlp.b_out if include_mlp_biases else 0)
        if mlp_input:
            bias = bias + self.blocks[layer].attn.b_O
        return bias

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> HookedViT:
        """Keep `cfg.device` current (transformer_lens' cache methods build tensors on it)."""
        out = super()._apply(fn, *args, **kwargs)
        self.cfg.device = next(self.parameters()).device
        return out

    # ----------------------------------------------------------------------------------------
    # hook-name checking: transformer_lens would raise a bare KeyError or silently match nothing

    def _set_flag(self, flag: str, value: bool) -> None:
        if flag in ("use_attn_in", "use_split_qkv_input") and value:
            other = "use_split_qkv_input" if flag == "use_attn_in" else "use_attn_in"
            if getattr(self.tl_cfg, other):
                raise ValueError(
                    f"{flag} and {other} cannot both be on (transformer_lens allows one at a time)"
                )
        setattr(self.tl_cfg, flag, bool(value))

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Turn on `attn.hook_result` (per-head outputs; memory-hungry, as in transformer_lens)."""
        self._set_flag("use_attn_result", use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Turn on `hook_q_input` / `hook_k_input` / `hook_v_input`."""
        self._set_flag("use_split_qkv_input", use_split_qkv_input)

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Turn on `hook_attn_in`."""
        self._set_flag("use_attn_in", use_attn_in)

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Turn on `hook_mlp_in`."""
        self._set_flag("use_hook_mlp_in", use_hook_mlp_in)

    def inactive_hooks(self) -> dict[str, str]:
        """Hook name -> the setter that activates it, for hooks that do not fire now."""
        inactive = {}
        for flag, suffixes in OPTIONAL_HOOKS.items():
            if not getattr(self.tl_cfg, flag):
                for layer in range(self.cfg.n_layers):
                    for suffix in suffixes:
                        inactive[f"blocks.{layer}.{suffix}"] = f"model.set_{flag}(True)"
        return inactive

    def check_hook_names(self, names: Iterable[str]) -> None:
        names = list(names)
        inactive = self.inactive_hooks()
        for name in names:
            if name in inactive:
                raise ValueError(
                    f"hook {name!r} does not fire with the current settings; call {inactive[name]} first"
                )
        unknown = [n for n in names if n not in self.hook_dict]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, list(self.hook_dict), n=3)
                hints.append(
                    f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                )
            raise ValueError(
                f"unknown hook name(s) for this {self.cfg.n_layers}-layer HookedViT: {'; '.join(hints)}. "
                "List valid names with model.hook_dict.keys()"
            )

    def _check_hook_specs(self, hooks: Sequence[tuple[Any, Callable]]) -> None:
        self.check_hook_names([name for name, _ in hooks if isinstance(name, str)])

    def add_hook(self, name: Any, hook: Callable, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if isinstance(name, str):
            self.check_hook_names([name])
        super().add_hook(name, hook, *args, **kwargs)

    @contextmanager
    def hooks(self, fwd_hooks: Sequence = (), bwd_hooks: Sequence = (), *args: Any, **kwargs: Any):  # type: ignore[override]
        self._check_hook_specs(fwd_hooks)
        self._check_hook_specs(bwd_hooks)
        with super().hooks(list(fwd_hooks), list(bwd_hooks), *args, **kwargs) as model:
            yield model

    def run_with_cache(  # type: ignore[override]
        self, *model_args: Any, names_filter: Any = None, return_cache_object: bool = True, **kwargs: Any
    ) -> tuple[torch.Tensor, VisionActivationCache | dict[str, torch.Tensor]]:
        """transformer_lens' run_with_cache; unknown names in `names_filter` raise instead of caching nothing.

        The cache is transformer_lens' ActivationCache (accumulated_resid, decompose_resid,
        stack_head_results, ...) with CLIP's stream start (after ln_pre) and final norm (ln_post):
        see :class:`~sae_clip_plugin.model.activation_cache.VisionActivationCache`.
        """
        if isinstance(names_filter, str):
            self.check_hook_names([names_filter])
        elif isinstance(names_filter, (list, tuple)):
            self.check_hook_names(names_filter)
            names_filter = list(names_filter)
        else:  # None or a predicate: skip hooks that cannot fire rather than fail on them
            inactive, wanted = self.inactive_hooks(), names_filter or (lambda name: True)
            names_filter = lambda name: name not in inactive and wanted(name)  # noqa: E731
        out, cache = super().run_with_cache(*model_args, names_filter=names_filter, **kwargs)
        if return_cache_object:
            cache = VisionActivationCache(
                cache, self, has_batch_dim=not kwargs.get("remove_batch_dim", False)
            )
        return out, cache

    # ----------------------------------------------------------------------------------------
    # text side and zero-shot classification

    def _require_text(self) -> TextTower:
        if self.text is None:
            raise RuntimeError(
                "this HookedViT has no text tower (built from a vision-only source); build it from a full "
                "CLIP (open_clip CLIP or transformers CLIPModel) to use encode_text / zero-shot"
            )
        return self.text

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp of the learned temperature: zero-shot logits are logit_scale * cos(image, class)."""
        return self._require_text().logit_scale.exp()

    def encode_text(self, texts: Sequence[str] | torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._require_text().encode(texts, normalize=normalize)

    def zero_shot_weights(
        self,
        classnames: Sequence[str] | None = None,
        templates: Sequence[str | Callable[[str], str]] | None = None,
        use_tqdm: bool = False,
    ) -> torch.Tensor:
        """[d_embed, n_classes] classifier as open_clip builds it (ImageNet names/templates by default)."""
        return self._require_text().zero_shot_weights(classnames, templates, use_tqdm=use_tqdm)

    def zero_shot_logits(self, image_embeds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """logit_scale * normalised image embedding @ weights (weights from zero_shot_weights)."""
        return zero_shot_logits(image_embeds, weights, self.logit_scale)

    # ----------------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        c = self.cfg
        return f"spec={c.model_spec!r}, layers={c.n_layers}, d_model={c.d_model}, tokens={c.n_tokens}"

    @property
    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    @staticmethod
    def stop_at_layer_for(hook_names: Sequence[str]) -> int | None:
        """The smallest `stop_at_layer` that still fires every hook in `hook_names` (None: the whole forward)."""
        return stop_at_layer_for(hook_names)

    def token_positions(self, tokens: TokenSpec = "all") -> list[int]:
        """The positions of this model's tokens that a selection names: 'all', 'cls' (position 0), 'patches', or
        positions (negative ones count from the end). The same meaning everywhere a `tokens=` argument is taken."""
        return TokenSelection.parse(tokens).all_positions(self.cfg.n_tokens)
