"""open_clip VisionTransformer -> HookedViT (weights, config, activation, preprocessing, text side)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

from sae_clip_plugin.model.build import BuildOptions, build_hooked_vit
from sae_clip_plugin.model.config import HookedViTConfig
from sae_clip_plugin.model.preprocess import preprocess_dict
from sae_clip_plugin.model.text import open_clip_text_tower
from sae_clip_plugin.model.weights import (
    StateDict,
    attention_weights,
    fold_layer_scale,
    layer_norm_weights,
    mlp_weights,
)

if TYPE_CHECKING:  # the converters receive the class; importing it here would be a cycle
    from sae_clip_plugin.model.hooked_vit import HookedViT


class UnsupportedModelError(ValueError):
    """The source is a CLIP whose image tower HookedViT cannot reproduce exactly."""


def _cached_open_clip_weights(cfg: dict[str, Any], cache_dir: str | None) -> bool:
    """Whether open_clip would find this tag's weights on disk (its own cache conventions: the hub file or
    its safetensors twin in the HF cache, or the URL's file name under ~/.cache/clip)."""
    from huggingface_hub import try_to_load_from_cache

    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename, "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else
                 os.path.splitext(filename)[0] + ".safetensors"]  # fmt: skip
        return any(isinstance(try_to_load_from_cache(repo_id, n, cache_dir=cache_dir), str) for n in names)
    url = cfg.get("url", "")
    target = os.path.join(
        cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(urlparse(url).path)
    )
    return bool(url) and os.path.isfile(target)


def check_open_clip_weights_reachable(
    name: str, pretrained: str | None, cache_dir: str | None = None
) -> None:
    """Fail at once, naming the fix, when a pretrained tag's weights are neither cached nor downloadable
    (open_clip would retry for about a minute, then give a generic download error)."""
    from sae_clip_plugin.hub import hub_unreachable_reason, url_unreachable_reason

    if not pretrained or os.path.isfile(pretrained):
        return
    cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    if not cfg or _cached_open_clip_weights(cfg, cache_dir):
        return  # an unknown tag: open_clip's own error lists the known ones
    reason = hub_unreachable_reason() if cfg.get("hf_hub") else url_unreachable_reason(cfg.get("url", ""))
    if reason:
        where = cfg.get("hf_hub") or cfg.get("url")
        raise ConnectionError(
            f"open_clip's weights for {name}/{pretrained} ({where}) are not cached on this machine and cannot be "
            f"downloaded: {reason}. Run once with network access (they are cached then), or give a local weights "
            f"file: open_clip:{name}/PATH/TO/open_clip_pytorch_model.bin"
        )


def create_open_clip(name: str, pretrained: str | None = None, **kwargs: Any) -> tuple[nn.Module, str | None]:
    """open_clip.create_model, with QuickGELU taken from open_clip's tag config (it only warns otherwise); a tag
    whose weights can be neither found nor downloaded fails at once (`check_open_clip_weights_reachable`)."""
    check_open_clip_weights_reachable(name, pretrained, kwargs.get("cache_dir"))
    force_quick_gelu = False
    if pretrained:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
        force_quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    model = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=force_quick_gelu, **kwargs)
    return model.eval(), f"open_clip:{name}" + (f"/{pretrained}" if pretrained else "")


def _activation_name(block: ResidualAttentionBlock) -> str:
    act = block.mlp.gelu
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU):
        return "gelu" if act.approximate == "none" else "gelu_pytorch_tanh"
    raise UnsupportedModelError(
        f"unsupported MLP activation {type(act).__name__}; HookedViT knows GELU and QuickGELU"
    )


def _check_supported(visual: nn.Module) -> None:
    if not isinstance(visual, VisionTransformer):
        raise UnsupportedModelError(
            f"HookedViT supports open_clip's VisionTransformer image tower; this model's is {type(visual).__name__} "
            "(timm towers, ModifiedResNet and other backbones are not supported)"
        )
    if visual.attn_pool is not None:
        raise UnsupportedModelError(
            "the attentional pooler (CoCa-style attn_pool) is not supported by HookedViT"
        )
    blocks = list(visual.transformer.resblocks)
    custom = [type(b).__name__ for b in blocks if type(b) is not ResidualAttentionBlock]
    if custom:
        raise UnsupportedModelError(
            f"custom transformer blocks ({custom[0]}: qk_norm / scaled cosine attention / head scaling) are not "
            "supported by HookedViT; only open_clip's default ResidualAttentionBlock is"
        )
    if visual.image_size[0] != visual.image_size[1] or visual.patch_size[0] != visual.patch_size[1]:
        raise UnsupportedModelError(f"non-square images or patches are not supported: {visual.image_size}")
    if not getattr(visual.transformer, "batch_first", True):
        raise UnsupportedModelError(
            "sequence-first open_clip transformers (batch_first=False) are not supported"
        )
    norms = [visual.ln_post] + [m for b in blocks for m in (b.ln_1, b.ln_2)]
    if not isinstance(visual.ln_pre, nn.Identity):
        norms.append(visual.ln_pre)
    for norm in norms:
        if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
            raise UnsupportedModelError(f"norm layer {type(norm).__name__} is not an affine LayerNorm")


def vision_config(
    visual: VisionTransformer, model_spec: str | None, preprocess: dict[str, Any]
) -> HookedViTConfig:
    block = visual.transformer.resblocks[0]
    d_model = visual.conv1.out_channels
    proj = visual.proj
    return HookedViTConfig(
        n_layers=len(visual.transformer.resblocks),
        d_model=d_model,
        n_heads=block.attn.num_heads,
        d_mlp=block.mlp.c_fc.out_features,
        image_size=visual.image_size[0],
        patch_size=visual.patch_size[0],
        d_embed=None if proj is None else proj.shape[1],
        act_fn=_activation_name(block),
        eps=block.ln_1.eps,
        n_channels=visual.conv1.in_channels,
        ln_pre=not isinstance(visual.ln_pre, nn.Identity),
        pool_type=visual.pool_type,
        final_ln_after_pool=visual.final_ln_after_pool,
        model_spec=model_spec,
        source="open_clip",
        layer_scale_folded=isinstance(block.ls_1, LayerScale),
        preprocess=preprocess,
    )


def vision_state_dict(visual: VisionTransformer, cfg: HookedViTConfig) -> StateDict:
    """open_clip parameter layout -> HookedViT layout (LayerScale folded into the out projections)."""
    sd: StateDict = {
        "embed.W_E": visual.conv1.weight.detach(),
        "embed.class_embedding": visual.class_embedding.detach(),
        "pos_embed.W_pos": visual.positional_embedding.detach(),
        **layer_norm_weights("ln_post.", visual.ln_post.weight.detach(), visual.ln_post.bias.detach()),
    }
    if cfg.ln_pre:
        sd.update(layer_norm_weights("ln_pre.", visual.ln_pre.weight.detach(), visual.ln_pre.bias.detach()))
    if cfg.d_embed is not None:
        sd["W_proj"] = visual.proj.detach()
        sd["b_proj"] = torch.zeros(cfg.d_embed, dtype=visual.proj.dtype)
    for i, block in enumerate(visual.transformer.resblocks):
        p = f"blocks.{i}."
        attn = block.attn
        w_q, w_k, w_v = attn.in_proj_weight.detach().chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.detach().chunk(3)
        sd.update(
            attention_weights(
                p + "attn.", cfg.n_heads, (w_q, w_k, w_v), (b_q, b_k, b_v),
                attn.out_proj.weight.detach(), attn.out_proj.bias.detach(),
            )
        )  # fmt: skip
        sd.update(
            mlp_weights(
                p + "mlp.", block.mlp.c_fc.weight.detach(), block.mlp.c_fc.bias.detach(),
                block.mlp.c_proj.weight.detach(), block.mlp.c_proj.bias.detach(),
            )
        )  # fmt: skip
        sd.update(layer_norm_weights(p + "ln1.", block.ln_1.weight.detach(), block.ln_1.bias.detach()))
        sd.update(layer_norm_weights(p + "ln2.", block.ln_2.weight.detach(), block.ln_2.bias.detach()))
        gammas = [
            ls.gamma.detach() if isinstance(ls, LayerScale) else None for ls in (block.ls_1, block.ls_2)
        ]
        fold_layer_scale(sd, i, *gammas)
    return sd


def _model_preprocess(model: nn.Module) -> dict[str, Any]:
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    size = cfg.get("size")
    if isinstance(size, (tuple, list)) and len(set(size)) == 1:
        cfg["size"] = size[0]
    return preprocess_dict(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})


def hooked_vit_from_open_clip(
    model_or_name: nn.Module | str,
    pretrained: str | None = None,
    *,
    model_spec: str | None = None,
    tokenizer: Any = None,
    **kwargs: Any,
) -> HookedViT:
    """Build a HookedViT from an open_clip model object, or create one by name and pretrained tag.

    GELU vs QuickGELU is read from the live module, so it is right whichever way the model was made.
    The text tower (if any) is copied into `model.text` for zero-shot use. Keyword arguments are
    BuildOptions (fold_ln, center_writing_weights, dtype, device); the rest go to open_clip.create_model.
    """
    options = BuildOptions.pop_from(kwargs)
    create_kwargs = kwargs
    if isinstance(model_or_name, str):
        model, spec = create_open_clip(model_or_name, pretrained, **create_kwargs)
        model_spec = model_spec or spec
        if tokenizer is None:
            tokenizer = open_clip.get_tokenizer(model_or_name)
    else:
        if create_kwargs:
            raise TypeError(f"unexpected keyword arguments for a model object: {sorted(create_kwargs)}")
        if pretrained is not None:
            raise ValueError(
                "pass `pretrained` only with a model name; a model object already has its weights"
            )
        model = model_or_name
    visual = model if isinstance(model, VisionTransformer) else getattr(model, "visual", None)
    if visual is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is not an open_clip CLIP or VisionTransformer (no `.visual` image tower)"
        )
    _check_supported(visual)
    preprocess = _model_preprocess(model)
    cfg = vision_config(visual, model_spec, preprocess)
    text = None
    if visual is not model:
        if tokenizer is None:
            context = open_clip.get_model_tokenize_cfg(model).get("context_length", 77)
            tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
        text = open_clip_text_tower(model, tokenizer)
    return build_hooked_vit(cfg, vision_state_dict(visual, cfg), text=text, options=options)
