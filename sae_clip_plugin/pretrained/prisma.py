"""Convert Prisma (vit_prisma) SAE checkpoints to sae_lens SAEs.

A Prisma SAE is a `.pt` pickle, either a bare state dict or {"cfg": <vit_prisma config>,
"state_dict": ...}, usually next to a `config.json`. Weights already use sae_lens' layout
(W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec; gated adds b_gate, r_mag, b_mag) and
Prisma's forward is sae_lens' forward (apply_b_dec_to_input, per-token "layer_norm"
normalisation with unbiased std + 1e-5), so conversion is a config mapping. The pickle is read
with `unpickler.restricted_torch_load`, so vit_prisma is never imported.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sae_clip_plugin.pretrained.architectures import register_own_architecture
from sae_clip_plugin.pretrained.checks import check_sae_values
from sae_clip_plugin.pretrained.unpickler import restricted_torch_load, to_plain

# sae_lens architecture name of Prisma's tanh-relu SAEs (the class lives in tanh_relu.py, which imports sae_lens:
# this module must not, because sae_lens' import runs our registration, which imports this module)
TANH_RELU = "prisma_tanh_relu"

# The model processing Prisma's SAE trainer used (HookedViT.from_pretrained defaults since 2025-02-18; its
# evaluation code always loads this way). Release dates of individual files cannot be known offline:
# override with load_prisma_sae(..., weight_processing=...) or by setting sae.cfg.metadata.weight_processing.
PRISMA_WEIGHT_PROCESSING: dict[str, bool] = {
    "fold_ln": True,
    "center_writing_weights": True,
    "fold_value_biases": True,
}
NO_WEIGHT_PROCESSING: dict[str, bool] = {
    "fold_ln": False,
    "center_writing_weights": False,
    "fold_value_biases": False,
}

# Prisma model names -> our model specs (docs/conventions.md). Keys are lower-cased.
PRISMA_MODEL_SPECS: dict[str, str] = {
    "open-clip:laion/clip-vit-b-32-datacomp.xl-s13b-b90k": "open_clip:ViT-B-32/datacomp_xl_s13b_b90k",
    "laion/clip-vit-b-32-datacomp.xl-s13b-b90k": "open_clip:ViT-B-32/datacomp_xl_s13b_b90k",
}

_PARAMS = {
    "standard": ("W_enc", "W_dec", "b_enc", "b_dec"),
    "topk": ("W_enc", "W_dec", "b_enc", "b_dec"),
    "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"),
    "jumprelu": ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"),
    TANH_RELU: ("W_enc", "W_dec", "b_enc", "b_dec"),
    # W_skip is optional (transcoder_with_skip_connection)
    "prisma_topk_transcoder": ("W_enc", "W_dec", "b_enc", "b_dec", "b_dec_out"),
    "prisma_relu_transcoder": ("W_enc", "W_dec", "b_enc", "b_dec", "b_dec_out"),
}
TRANSCODERS = ("prisma_topk_transcoder", "prisma_relu_transcoder")  # pretrained/prisma_transcoder.py
_SAE_CONFIG_FIELDS = {
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "k",
}
WEIGHT_FILE_PREFERENCE = ("weights.pt", "n_images_*.pt", "*.pt", "*.pth")
# written by Prisma's trainer beside the weights (n_images_N_log_feature_sparsity.pt): never the SAE itself
NOT_WEIGHTS = re.compile(r"(log_feature_sparsity|sparsity)\.pth?$")


def decode_prisma_value(value: Any) -> Any:
    """Undo Prisma's JSON encoding ({"__type__": "torch.dtype", "value": "torch.float32"})."""
    if isinstance(value, Mapping):
        if "__type__" in value and "value" in value:
            inner = str(value["value"])
            return inner.removeprefix("torch.") if "dtype" in str(value["__type__"]) else inner
        return {k: decode_prisma_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_prisma_value(v) for v in value]
    return to_plain(value)


def read_prisma_checkpoint(
    weights_path: str | Path, config_path: str | Path | None = None, map_location: str = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(raw config, state dict) from a Prisma `.pt` (+ optional config.json, which wins on conflicts)."""
    obj = restricted_torch_load(weights_path, map_location=map_location)
    raw_cfg: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj:
        state = obj["state_dict"]
        cfg_obj = decode_prisma_value(obj.get("cfg"))
        raw_cfg = cfg_obj if isinstance(cfg_obj, dict) else {}
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        keys = list(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{weights_path} is not a Prisma SAE checkpoint: expected a state dict or "
            f"{{'cfg': ..., 'state_dict': ...}}, got {keys}"
        )
    if config_path is not None:
        with open(config_path) as f:
            raw_cfg = {**raw_cfg, **decode_prisma_value(json.load(f))}
    return raw_cfg, {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _architecture(cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> tuple[str, int | None]:
    """(sae_lens architecture, k) of a Prisma config + state dict; what sae_lens cannot represent is refused."""
    act = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu").lower()
    arch = str(cfg.get("architecture") or "standard").lower()
    is_transcoder = (
        cfg.get("is_transcoder") or cfg.get("transcoder") or "W_skip" in state or "b_dec_out" in state
    )
    if (
        is_transcoder
        and act in ("topk", "top_k")
        and (cfg.get("activation_fn_kwargs") or {}).get("k") is not None
    ):
        return "prisma_topk_transcoder", int(cfg["activation_fn_kwargs"]["k"])
    if is_transcoder and act == "relu":
        return "prisma_relu_transcoder", None
    if is_transcoder:
        raise NotImplementedError(
            f"Prisma transcoders with activation {act!r} are not supported (TopK with activation_fn_kwargs.k and "
            "ReLU are). Read the weights safely with sae_clip_plugin.pretrained.restricted_torch_load(path)"
            "['state_dict']"
        )
    if "b_gate" in state or arch == "gated":
        return "gated", None
    if arch == "jumprelu" or "threshold" in state or "log_threshold" in state:
        if "threshold" not in state and "log_threshold" not in state:
            raise ValueError("Prisma jumprelu SAE without a threshold (or log_threshold) in its state dict")
        return "jumprelu", None
    if act in ("topk", "top_k"):
        kwargs = cfg.get("activation_fn_kwargs") or {}
        k = kwargs.get("k")
        if k is None:
            raise ValueError(
                "topk Prisma SAE without activation_fn_kwargs.k in its config; add activation_fn_kwargs: {'k': ...} "
                "to its config.json"
            )
        postact = kwargs.get("postact_fn")
        if postact is not None and not _is_relu(postact):
            raise NotImplementedError(
                f"topk Prisma SAE with postact_fn={postact!r}: sae_lens' TopK SAE applies ReLU to the kept values; "
                "only the default ReLU post-activation can be loaded"
            )
        if isinstance(k, bool) or not isinstance(k, (int, float)) or int(k) != k:
            raise ValueError(
                f"topk Prisma SAE with activation_fn_kwargs.k={k!r}: k must be a whole number of features; fix its config.json"
            )
        return "topk", int(k)
    if act == "relu":
        return "standard", None
    if act == "tanh-relu":
        return TANH_RELU, None
    raise ValueError(f"unsupported Prisma activation_fn_str {act!r}; supported: 'relu', 'topk', 'tanh-relu'")


def _is_relu(postact: Any) -> bool:
    """A pickled nn.ReLU() (a stand-in record or its dotted name) or the strings Prisma configs use."""
    name = getattr(postact, "pickled_class", None) or str(postact)
    return name.lower().rsplit(".", 1)[-1].strip("()<> ") in ("relu", "relu()", "torch.nn.relu")


def _normalisation(cfg: Mapping[str, Any]) -> str:
    # A config without the key takes vit_prisma's default, "layer_norm" (VisionModelSAERunnerConfig).
    value = cfg.get("normalize_activations", "layer_norm")
    if value in (None, False, "none", "None"):
        return "none"
    if value in ("layer_norm", "constant_norm_rescale"):
        return str(value)
    raise ValueError(
        f"unsupported Prisma normalize_activations {value!r}; supported: 'layer_norm', 'constant_norm_rescale', 'none'"
    )


def _hook_name(cfg: Mapping[str, Any]) -> str:
    hook_point = cfg.get("hook_point")
    if isinstance(hook_point, str) and hook_point.startswith("blocks."):
        return hook_point
    layer = cfg.get("hook_point_layer")
    if isinstance(layer, list) and len(layer) == 1:
        layer = layer[0]
    if not isinstance(layer, int):
        raise ValueError(
            "cannot tell the SAE's hook from its config (no hook_point_layer); pass hook_name=..."
        )
    return f"blocks.{layer}.{cfg.get('layer_subtype') or 'hook_resid_post'}"


def _token_selection(cfg: Mapping[str, Any]) -> str:
    if cfg.get("cls_token_only") or cfg.get("cls_token"):
        return "cls"
    if cfg.get("use_patches_only"):
        return "patches"
    return "all"


def _vision_geometry(model_name: str, cfg: Mapping[str, Any]) -> tuple[int, int | None]:
    image_size = int(cfg.get("image_size") or 224)
    match = re.search(r"ViT-[A-Za-z]+-(\d+)", model_name, flags=re.IGNORECASE)
    patch = int(match.group(1)) if match else None
    vit_cfg = cfg.get("vit_model_cfg")
    if patch is None and isinstance(vit_cfg, Mapping) and isinstance(vit_cfg.get("patch_size"), int):
        patch = vit_cfg["patch_size"]
    return image_size, patch


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def prisma_sae_config(
    raw_cfg: Mapping[str, Any],
    *,
    d_in: int | None = None,
    d_sae: int | None = None,
    state_keys: Any = (),
    hook_name: str | None = None,
    token_selection: str | None = None,
    model_name: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Prisma config -> a sae_lens 6 cfg dict with our vision metadata. Unknown keys are kept, never fatal."""
    # here, not at module level: importing sae_lens runs our registration, which imports this module (cycle)
    import sae_lens

    cfg = decode_prisma_value(dict(raw_cfg))
    architecture, k = _architecture(cfg, dict.fromkeys(state_keys))
    d_in = d_in or cfg.get("d_in")
    d_sae = (
        d_sae
        or cfg.get("d_sae")
        or (d_in * cfg["expansion_factor"] if d_in and cfg.get("expansion_factor") else None)
    )
    if not isinstance(d_in, int) or not isinstance(d_sae, int):
        raise ValueError("the Prisma config gives no d_in/d_sae and no weights were given to read them from")
    prisma_model = str(cfg.get("model_name") or "")
    model_spec = model_name or PRISMA_MODEL_SPECS.get(prisma_model.lower(), prisma_model or None)
    image_size, patch_size = _vision_geometry(f"{model_spec} {prisma_model}", cfg)
    n_tokens = 1 + (image_size // patch_size) ** 2 if patch_size else None
    selection = token_selection or _token_selection(cfg)
    if n_tokens:
        context_size = {"all": n_tokens, "cls": 1, "patches": n_tokens - 1}[selection]
    else:
        context_size = cfg.get("context_size")
    metadata: dict[str, Any] = {
        "model_name": model_spec,
        "hook_name": hook_name or _hook_name(cfg),
        "hook_head_index": None,
        "context_size": context_size,
        "prepend_bos": False,
        "token_selection": selection,
        "image_size": image_size,
        "patch_size": patch_size,
        "n_tokens": n_tokens,
        "cls_token_index": 0,
        "weight_processing": dict(PRISMA_WEIGHT_PROCESSING),
        "dataset": cfg.get("dataset_name") or cfg.get("dataset_path"),
        "sae_lens_version": sae_lens.__version__,
        "source_format": "prisma",
        "prisma_config": _jsonable({k: v for k, v in cfg.items() if not isinstance(v, torch.Tensor)}),
        **(extra_metadata or {}),
    }
    cfg_dict: dict[str, Any] = {
        "architecture": architecture,
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "dtype": dtype,
        "device": device,
        "apply_b_dec_to_input": True,
        "normalize_activations": _normalisation(cfg),
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if k is not None:
        cfg_dict["k"] = k
    return cfg_dict


def convert_prisma(
    raw_cfg: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: str = "cpu",
    dtype: str = "float32",
    **config_kwargs: Any,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Prisma (config, state dict) -> (sae_lens cfg dict, state dict); kwargs as in `prisma_sae_config`."""
    architecture, _ = _architecture(decode_prisma_value(dict(raw_cfg)), state_dict)
    missing = [
        p
        for p in _PARAMS[architecture]
        if p not in state_dict and not (p == "threshold" and "log_threshold" in state_dict)
    ]
    if missing:
        raise ValueError(f"Prisma {architecture} SAE state dict lacks {missing}; it has {sorted(state_dict)}")
    dropped = sorted(set(state_dict) - set(_PARAMS[architecture]) - {"log_threshold", "W_skip"})
    if dropped:
        warnings.warn(f"ignoring Prisma state-dict entries {dropped}", stacklevel=2)
    if architecture == "jumprelu" and "threshold" not in state_dict:  # Prisma may store log_threshold
        state_dict = {**state_dict, "threshold": state_dict["log_threshold"].exp()}
    state = {p: state_dict[p].to(device=device, dtype=getattr(torch, dtype)) for p in _PARAMS[architecture]}
    if architecture in TRANSCODERS:
        return _convert_transcoder(raw_cfg, state_dict, state, device=device, dtype=dtype, **config_kwargs)
    d_in, d_sae = state["W_enc"].shape
    if tuple(state["W_dec"].shape) != (d_sae, d_in):
        raise ValueError(
            f"W_dec has shape {tuple(state['W_dec'].shape)}, expected {(d_sae, d_in)} from W_enc"
        )
    expected = {"b_enc": (d_sae,), "b_dec": (d_in,), "b_gate": (d_sae,), "r_mag": (d_sae,), "b_mag": (d_sae,)}
    wrong = {k: tuple(v.shape) for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]}
    if wrong:
        raise ValueError(
            f"Prisma SAE weights have inconsistent shapes {wrong} for d_in={d_in}, d_sae={d_sae}"
        )
    for key, actual in (("d_in", d_in), ("d_sae", d_sae)):
        stated = raw_cfg.get(key)
        if isinstance(stated, int) and stated != actual:
            raise ValueError(
                f"the Prisma config says {key}={stated} but the weights have {actual}: the file does not belong to "
                "this config (a corrupt or replaced checkpoint); re-download it"
            )
    cfg_dict = prisma_sae_config(
        raw_cfg,
        d_in=int(d_in),
        d_sae=int(d_sae),
        state_keys=state,
        device=device,
        dtype=dtype,
        **config_kwargs,
    )
    source = str((config_kwargs.get("extra_metadata") or {}).get("source_path") or "the Prisma SAE")
    check_sae_values(cfg_dict, state, source)
    return cfg_dict, state


def _convert_transcoder(
    raw_cfg: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    *,
    device: str,
    dtype: str,
    **config_kwargs: Any,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A Prisma transcoder -> PrismaTranscoder: b_dec (input side) folded into b_enc, b_dec_out as b_dec."""
    d_in, d_sae = (int(n) for n in state["W_enc"].shape)
    d_out = int(state["W_dec"].shape[1])
    expected = {"W_dec": (d_sae, d_out), "b_enc": (d_sae,), "b_dec": (d_in,), "b_dec_out": (d_out,)}
    if "W_skip" in state_dict:
        state["W_skip"] = state_dict["W_skip"].to(device=device, dtype=getattr(torch, dtype))
        expected["W_skip"] = (d_out, d_in)
    wrong = {k: tuple(state[k].shape) for k, shape in expected.items() if tuple(state[k].shape) != shape}
    if wrong:
        raise ValueError(
            f"Prisma transcoder weights have inconsistent shapes {wrong} for d_in={d_in}, d_sae={d_sae}"
        )
    cfg = decode_prisma_value(dict(raw_cfg))
    cfg_dict = prisma_sae_config(
        raw_cfg, d_in=d_in, d_sae=d_sae, state_keys=state, device=device, dtype=dtype, **config_kwargs
    )
    out_layer = cfg.get("out_hook_point_layer", cfg.get("hook_point_layer"))
    cfg_dict.update(apply_b_dec_to_input=False, d_out=d_out, with_skip="W_skip" in state)
    cfg_dict["metadata"]["hook_name_out"] = (
        f"blocks.{out_layer}.{cfg.get('layer_out_subtype') or 'hook_mlp_out'}"
    )
    converted = {
        "W_enc": state["W_enc"],
        "W_dec": state["W_dec"],
        "b_enc": state["b_enc"] - state["b_dec"] @ state["W_enc"],  # (x_n - b_dec) W_enc + b_enc, exactly
        "b_dec": state["b_dec_out"],
        **({"W_skip": state["W_skip"]} if "W_skip" in state else {}),
    }
    source = str((config_kwargs.get("extra_metadata") or {}).get("source_path") or "the Prisma transcoder")
    check_sae_values(cfg_dict, converted, source)
    return cfg_dict, converted


def apply_overrides(cfg_dict: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """sae_lens-style cfg_overrides: SAE config fields at top level, everything else into metadata."""
    for key, value in (overrides or {}).items():
        if key in _SAE_CONFIG_FIELDS:
            cfg_dict[key] = value
        else:
            cfg_dict["metadata"][key] = value
    return cfg_dict


def matching_weight_files(names: list[str], pattern: str) -> list[str]:
    """The file names that match one WEIGHT_FILE_PREFERENCE pattern, sorted, the trainer's sparsity files left out."""
    return sorted(n for n in names if Path(n).match(pattern) and not NOT_WEIGHTS.search(Path(n).name))


def find_weights_file(folder: Path) -> Path:
    """The Prisma weights file in a folder: weights.pt, n_images_*.pt, else the only *.pt/*.pth."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    for pattern in WEIGHT_FILE_PREFERENCE:
        found = [folder / n for n in matching_weight_files(names, pattern)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(
                f"several Prisma weight files in {folder}: {[p.name for p in found]}; pass one file"
            )
    raise FileNotFoundError(f"no Prisma weights (*.pt) in {folder}")


def prisma_disk_loader(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """sae_lens PretrainedSaeDiskLoader for a Prisma file or folder (config.json beside it is used)."""
    path = Path(path)
    weights = find_weights_file(path) if path.is_dir() else path
    config = weights.parent / "config.json"
    raw_cfg, state = read_prisma_checkpoint(
        weights, config if config.is_file() else None, map_location=device
    )
    overrides = dict(cfg_overrides or {})
    dtype = str(overrides.pop("dtype", None) or "float32").removeprefix("torch.")
    converted = convert_prisma(
        raw_cfg,
        state,
        hook_name=overrides.pop("hook_name", None),
        token_selection=overrides.pop("token_selection", None),
        model_name=overrides.pop("model_name", None),
        device=device,
        dtype=dtype,
        extra_metadata={"source_path": str(weights)},
    )
    return apply_overrides(converted[0], overrides), converted[1]


def load_prisma_sae(
    path_or_folder: str | Path,
    device: str = "cpu",
    dtype: str = "float32",
    hook_name: str | None = None,
    token_selection: str | None = None,
    model_name: str | None = None,
    weight_processing: dict[str, bool] | None = None,
) -> Any:
    """Load a local Prisma SAE (a `.pt` file or a folder holding one, with config.json) as a sae_lens SAE.

    hook_name / token_selection / model_name override what the config says (or fill in what it lacks).
    weight_processing: the model processing the SAE was trained on (default PRISMA_WEIGHT_PROCESSING; pass
    NO_WEIGHT_PROCESSING for files trained before 2025-02-18). It decides what activations the SAE gets.
    """
    # here, not at module level: importing sae_lens runs our registration, which imports this module, and
    # tanh_relu imports this module (cycles)
    from sae_lens import SAE

    from sae_clip_plugin.pretrained.tanh_relu import register_tanh_relu

    register_tanh_relu()
    register_own_architecture("sae_clip_plugin.pretrained.prisma_transcoder", "register_prisma_transcoder")
    given = {
        "hook_name": hook_name,
        "token_selection": token_selection,
        "model_name": model_name,
        "weight_processing": weight_processing,
    }
    extra = {k: v for k, v in given.items() if v is not None}

    def converter(path: str | Path, device: str, cfg_overrides: dict[str, Any] | None = None) -> Any:
        return prisma_disk_loader(path, device, {**(cfg_overrides or {}), **extra})

    return SAE.load_from_disk(path_or_folder, device=device, dtype=dtype, converter=converter)
