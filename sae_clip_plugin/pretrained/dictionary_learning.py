"""dictionary_learning (saprmarks, PyPI `dictionary-learning` 0.1.0; vendored by sae-for-vlm) -> sae_lens SAEs.

A run folder `trainer_<i>/` holds `ae.pt` (torch.save of the state dict; `checkpoints/ae_<step>.pt` likewise)
and `config.json` ({"trainer": {"dict_class", "activation_dim", "dict_size", "k", "layer", "lm_name", ...}}).
Per class (x raw: `trainSAE(normalize_activations=True)` folds its norm factor into the saved biases):
- AutoEncoder: f = relu(W_e (x - bias) + b_e) -> StandardSAE, apply_b_dec_to_input.
- AutoEncoderTopK: top-k of relu(W_e (x - b_dec) + b_e) per row -> sae_lens TopKSAE (top-k then ReLU: the same
  values, a kept non-positive entry is 0 both ways).
- BatchTopKSAE, MatryoshkaBatchTopKSAE (sae-for-vlm: MatroyshkaBatchTopKSAE), at inference: p * (p > theta)
  with p = relu(pre) -> JumpReLUSAE with threshold theta for every feature: relu(pre) * (pre > theta) is the
  same for theta >= 0 (p > theta iff pre > theta) and for theta < 0 (both are relu(pre)). Exact.
- JumpReluAutoEncoder: relu(pre * (pre > theta_i)), pre = x W_enc + b_enc (no b_dec subtraction) -> JumpReLUSAE.
The nn.Linear classes store encoder.weight [F, D] and decoder.weight [D, F]; they are transposed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sae_clip_plugin.pretrained.family_base import (
    ModelFacts,
    check_config_dims,
    check_sae_state,
    first_hub_file,
    hub_file,
    load_tensor_file,
    read_config,
    refuse,
    require_keys,
    sae_cfg_dict,
    tensors_only,
)

FAMILY = "dictionary_learning"
CONVERSION_FUNC = "dictionary_learning_vision"
# sae-for-vlm's model (transformers CLIPVisionModelWithProjection); its SAEs read the CLS token of an encoder
# layer's output (hidden_states[N + 1] = blocks.N.hook_resid_post)
SAE_FOR_VLM_MODEL = ModelFacts(
    "hf:openai/clip-vit-large-patch14-336", 336, 14, "transformers CLIPProcessor of the repo"
)
_LINEAR = ("encoder.weight", "encoder.bias", "decoder.weight")
_CLASSES = {  # dict_class -> (our architecture, keys, b_dec key, apply_b_dec_to_input)
    "AutoEncoder": ("standard", ("bias", *_LINEAR), "bias", True),
    "AutoEncoderTopK": ("topk", ("b_dec", "k", *_LINEAR), "b_dec", True),
    "BatchTopKSAE": ("jumprelu", ("b_dec", "k", "threshold", *_LINEAR), "b_dec", True),
    "MatryoshkaBatchTopKSAE": (
        "jumprelu",
        ("W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"),
        "b_dec",
        True,
    ),
    "JumpReluAutoEncoder": ("jumprelu", ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"), "b_dec", False),
}
_ALIASES = {"MatroyshkaBatchTopKSAE": "MatryoshkaBatchTopKSAE"}  # sae-for-vlm's spelling
TRAINED_ON = (
    "x / norm_factor (trainSAE normalize_activations); the saved biases are rescaled, so the file takes raw x"
)


def _dict_class(path: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    name = trainer.get("dict_class")
    if name:
        name = _ALIASES.get(name, name)
        if name not in _CLASSES:
            raise refuse(path, f"dict_class {name!r} is not supported", f"supported: {sorted(_CLASSES)}")
        return name
    if "group_sizes" in state:
        return "MatryoshkaBatchTopKSAE"
    if "W_enc" in state:
        return "JumpReluAutoEncoder"
    if "bias" in state:
        return "AutoEncoder"
    if (
        "threshold" in state and "k" in state
    ):  # TopK and BatchTopK share keys: only config.json tells them apart
        raise refuse(
            path, "is a TopK or BatchTopK SAE and no config.json says which", "put its config.json beside it"
        )
    raise refuse(path, f"keys {sorted(state)[:8]} match no dictionary_learning class", "pass an ae.pt")


def convert_dictionary_learning(
    path: str | Path, config: dict[str, Any], raw: dict[str, torch.Tensor], **facts: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    name = _dict_class(path, config, raw)
    architecture, keys, b_dec_key, apply_b_dec = _CLASSES[name]
    require_keys(path, raw, keys, f"dictionary_learning {name}")
    if "W_enc" in raw:
        state = {n: raw[n].float() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    else:
        enc, dec = raw["encoder.weight"], raw["decoder.weight"]
        if enc.ndim != 2 or tuple(dec.shape) != tuple(enc.shape)[::-1]:
            raise refuse(
                path, f"encoder.weight {tuple(enc.shape)} and decoder.weight {tuple(dec.shape)} are not [F, D] and [D, F]",
                "the file is corrupt or of another family; re-download it",
            )  # fmt: skip
        state = {"W_enc": enc.T.float(), "b_enc": raw["encoder.bias"].float(), "W_dec": dec.T.float()}
        state["b_dec"] = raw[b_dec_key].float()
    d_sae = state["W_enc"].shape[-1]
    k = None
    if "k" in raw:
        k = int(raw["k"].reshape(-1)[0]) if raw["k"].numel() == 1 else None
        trainer = config.get("trainer") or {}
        if isinstance(trainer.get("k"), int) and trainer["k"] != k:
            raise refuse(
                path,
                f"config.json says k={trainer['k']} but the weights say k={k}",
                "use the matching config",
            )
    if architecture == "jumprelu":
        theta = raw["threshold"].float().reshape(-1)
        if theta.numel() == 1:
            theta = theta.expand(d_sae).clone()
        state["threshold"] = theta
    if name == "MatryoshkaBatchTopKSAE" and int(raw["group_sizes"].sum()) != d_sae:
        raise refuse(
            path, f"group_sizes sum to {int(raw['group_sizes'].sum())}, not d_sae={d_sae}", "re-download it"
        )
    d_in, d_sae = check_sae_state(path, state, k if architecture == "topk" else None)
    if k is not None and not 0 < k <= d_sae:
        raise refuse(path, f"k={k} is not in 1..d_sae={d_sae}", "fix the k buffer / config")
    trainer = config.get("trainer") or {}
    check_config_dims(path, trainer, {"activation_dim": d_in, "dict_size": d_sae})
    layer = trainer.get("layer")
    hook = facts.pop("hook_name", None) or (
        f"blocks.{layer}.hook_resid_post" if isinstance(layer, int) and layer >= 0 else None
    )
    model = facts.pop("model", None)
    source = {
        "format": "dictionary_learning", "dict_class": name, "k": k, "lm_name": trainer.get("lm_name"),
        "layer": layer, **facts.pop("source", {}),
    }  # fmt: skip
    cfg = sae_cfg_dict(
        architecture=architecture, d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec, model=model,
        hook_name=hook, family=FAMILY, token_selection=facts.pop("token_selection", None) or "cls", source=source,
        input_normalisation={"trained_on": TRAINED_ON, "stats_in_file": True, "folded": True},
        k=k if architecture == "topk" else None,
    )  # fmt: skip
    return cfg, state


def _files(path: Path) -> tuple[Path, Path | None]:
    """(weights, config.json or None): a trainer folder, an ae.pt, or checkpoints/ae_<step>.pt."""
    if path.is_dir():
        weights = path / "ae.pt"
        if not weights.is_file():
            raise refuse(path, "has no ae.pt", "pass a trainer_<i> folder or the .pt file itself")
    else:
        weights = path
    for folder in (weights.parent, weights.parent.parent):
        if (folder / "config.json").is_file():
            return weights, folder / "config.json"
    return weights, None


def read(path: str | Path, **facts: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    weights, config_path = _files(Path(path))
    config = read_config(config_path) if config_path else {}
    raw = tensors_only(weights, load_tensor_file(weights))
    facts.setdefault("source", {}).update(path=str(weights))
    return convert_dictionary_learning(weights, config, raw, **facts)


def sniff(path: Path) -> bool:
    weights = path / "ae.pt" if path.is_dir() else path
    return weights.is_file() and bool(re.fullmatch(r"ae(_\d+)?\.pt", weights.name))


def hub_path(repo_id: str, folder_name: str, force_download: bool) -> str:
    """`trainer_0` (its ae.pt) or a file path like `trainer_0/checkpoints/ae_100000.pt`; config.json beside."""
    name = folder_name.strip("/")
    weights = hub_file(repo_id, name if name.endswith(".pt") else f"{name}/ae.pt", force_download)
    parts = Path(name).parts
    folders = (
        [str(Path(*parts[:i])) for i in range(len(parts) - 1, 0, -1)] if name.endswith(".pt") else [name]
    )
    first_hub_file(repo_id, tuple(f"{f}/config.json" for f in folders[:2]), force_download)
    return weights
