"""transformers CLIP (CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection) -> HookedViT."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import open_clip
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerBase,
)

from sae_clip_plugin.model.build import BuildOptions, build_hooked_vit
from sae_clip_plugin.model.config import HookedViTConfig
from sae_clip_plugin.model.open_clip_convert import UnsupportedModelError
from sae_clip_plugin.model.preprocess import preprocess_dict
from sae_clip_plugin.model.text import HFTextEncoder, HFTokenizer, TextTower
from sae_clip_plugin.model.weights import StateDict, attention_weights, layer_norm_weights, mlp_weights

if TYPE_CHECKING:  # the converters receive the class; importing it here would be a cycle
    from sae_clip_plugin.model.hooked_vit import HookedViT

# transformers' hidden_act -> transformer_lens activation name (both exact erf GELU for "gelu")
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "quick_gelu": "quick_gelu",
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_pytorch_tanh",
}
VISION_PREFIX = "vision_model."


def vision_config(
    vcfg: Any, d_embed: int | None, model_spec: str | None, preprocess: dict[str, Any]
) -> HookedViTConfig:
    act = HF_ACTIVATIONS.get(vcfg.hidden_act)
    if act is None:
        raise UnsupportedModelError(
            f"hidden_act={vcfg.hidden_act!r} is not supported; known: {sorted(HF_ACTIVATIONS)}"
        )
    return HookedViTConfig(
        n_layers=vcfg.num_hidden_layers,
        d_model=vcfg.hidden_size,
        n_heads=vcfg.num_attention_heads,
        d_mlp=vcfg.intermediate_size,
        image_size=vcfg.image_size,
        patch_size=vcfg.patch_size,
        d_embed=d_embed,
        act_fn=act,
        eps=vcfg.layer_norm_eps,
        n_channels=vcfg.num_channels,
        ln_pre=True,
        pool_type="tok",
        final_ln_after_pool=True,  # HF applies post_layernorm to the pooled CLS token only
        model_spec=model_spec,
        source="hf",
        preprocess=preprocess,
    )


def strip_vision_prefix(state_dict: StateDict) -> StateDict:
    """Keys of the vision tower without the `vision_model.` prefix (text keys dropped)."""
    if any(k.startswith(VISION_PREFIX) for k in state_dict):
        out = {k[len(VISION_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(VISION_PREFIX)}
        if "visual_projection.weight" in state_dict:
            out["visual_projection.weight"] = state_dict["visual_projection.weight"]
        return out
    return dict(state_dict)


def vision_state_dict(hf: StateDict, cfg: HookedViTConfig) -> StateDict:
    """HF parameter names (no prefix) -> HookedViT layout."""
    try:
        sd: StateDict = {
            "embed.W_E": hf["embeddings.patch_embedding.weight"],
            "embed.class_embedding": hf["embeddings.class_embedding"],
            "pos_embed.W_pos": hf["embeddings.position_embedding.weight"],
            **layer_norm_weights("ln_pre.", hf["pre_layrnorm.weight"], hf["pre_layrnorm.bias"]),
            **layer_norm_weights("ln_post.", hf["post_layernorm.weight"], hf["post_layernorm.bias"]),
        }
        if cfg.d_embed is not None:
            sd["W_proj"] = hf["visual_projection.weight"].T.contiguous()
            sd["b_proj"] = torch.zeros(cfg.d_embed, dtype=sd["W_proj"].dtype)
        for i in range(cfg.n_layers):
            h, p = f"encoder.layers.{i}.", f"blocks.{i}."
            a = h + "self_attn."
            sd.update(
                attention_weights(
                    p + "attn.", cfg.n_heads,
                    tuple(hf[a + f"{n}_proj.weight"] for n in "qkv"), tuple(hf[a + f"{n}_proj.bias"] for n in "qkv"),
                    hf[a + "out_proj.weight"], hf[a + "out_proj.bias"],
                )
            )  # fmt: skip
            sd.update(
                mlp_weights(
                    p + "mlp.", hf[h + "mlp.fc1.weight"], hf[h + "mlp.fc1.bias"],
                    hf[h + "mlp.fc2.weight"], hf[h + "mlp.fc2.bias"],
                )
            )  # fmt: skip
            sd.update(
                layer_norm_weights(p + "ln1.", hf[h + "layer_norm1.weight"], hf[h + "layer_norm1.bias"])
            )
            sd.update(
                layer_norm_weights(p + "ln2.", hf[h + "layer_norm2.weight"], hf[h + "layer_norm2.bias"])
            )
    except KeyError as err:
        raise UnsupportedModelError(f"not a transformers CLIP vision state dict: missing key {err}") from err
    return sd


def _hf_preprocess(repo_id: str, image_size: int) -> dict[str, Any]:
    """Read the repo's CLIPImageProcessor (resize shortest side, centre crop, normalise)."""
    try:
        proc = CLIPImageProcessor.from_pretrained(repo_id)
    except Exception:  # no processor files: CLIP's defaults are the right guess
        return preprocess_dict(size=image_size)
    crop = proc.crop_size
    size = crop.get("height", image_size) if isinstance(crop, dict) else int(crop or image_size)
    return preprocess_dict(size=size, mean=tuple(proc.image_mean), std=tuple(proc.image_std))


def _load_repo(repo_id: str) -> nn.Module:
    config = AutoConfig.from_pretrained(repo_id)
    if config.model_type == "clip":
        return CLIPModel.from_pretrained(repo_id)
    if config.model_type == "clip_vision_model":
        return CLIPVisionModelWithProjection.from_pretrained(repo_id)
    raise UnsupportedModelError(
        f"{repo_id} is a {config.model_type!r} model; from_hf expects a CLIP checkpoint"
    )


def _text_tower(model: nn.Module, tokenizer: Any) -> TextTower | None:
    if not (hasattr(model, "text_model") and hasattr(model, "text_projection")):
        return None
    context = model.config.text_config.max_position_embeddings
    if tokenizer is None:  # same BPE vocabulary as OpenAI CLIP; pooling uses the end-of-text token
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
    elif isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = HFTokenizer(tokenizer, context)
    return TextTower(HFTextEncoder(model.text_model, model.text_projection), tokenizer, model.logit_scale)


def hooked_vit_from_hf(
    repo_id_or_model: str | nn.Module | StateDict,
    *,
    config: Any = None,
    tokenizer: Any = None,
    model_spec: str | None = None,
    **build_options: Any,
) -> HookedViT:
    """Build a HookedViT from a transformers CLIP model, a hub repo id, or a state dict plus `config`.

    State dicts may carry the `vision_model.` prefix (CLIPModel, CLIPVisionModelWithProjection) or not
    (CLIPVisionModel in transformers 5); a `visual_projection.weight` key adds the projection.
    Other keyword arguments are BuildOptions (fold_ln, center_writing_weights, dtype, device).
    """
    options = BuildOptions(**build_options)
    preprocess: dict[str, Any] | None = None
    if isinstance(repo_id_or_model, str):
        repo_id = repo_id_or_model
        model = _load_repo(repo_id)
        model_spec = model_spec or f"hf:{repo_id}"
        if tokenizer is None and hasattr(model, "text_model"):
            tokenizer = AutoTokenizer.from_pretrained(repo_id)
        vcfg = getattr(model.config, "vision_config", model.config)
        preprocess = _hf_preprocess(repo_id, vcfg.image_size)
        repo_id_or_model = model
    if isinstance(repo_id_or_model, nn.Module):
        model = repo_id_or_model
        config = getattr(model, "config", None)
        if config is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} is not a transformers CLIP model (no .config); use HookedViT.from_open_clip "
                "for open_clip models"
            )
        state_dict = strip_vision_prefix(model.state_dict())
        text = _text_tower(model, tokenizer)
    elif isinstance(repo_id_or_model, dict):
        if config is None:
            raise ValueError("from_hf(state_dict) needs config= (a CLIPConfig or CLIPVisionConfig)")
        state_dict, text = strip_vision_prefix(repo_id_or_model), None
    else:
        raise UnsupportedModelError(
            f"from_hf expects a transformers CLIP model, a repo id or a state dict, got {type(repo_id_or_model).__name__}"
        )
    vcfg = getattr(config, "vision_config", config)
    if not hasattr(vcfg, "num_hidden_layers") or not hasattr(vcfg, "patch_size"):
        raise UnsupportedModelError(f"{type(config).__name__} is not a CLIP vision config")
    d_embed = (
        state_dict["visual_projection.weight"].shape[0] if "visual_projection.weight" in state_dict else None
    )
    cfg = vision_config(vcfg, d_embed, model_spec, preprocess or preprocess_dict(size=vcfg.image_size))
    return build_hooked_vit(cfg, vision_state_dict(state_dict, cfg), text=text, options=options)
