"""visaebench (PyPI `visaebench` 0.1.0, `visaebench.hub.load_sae` / `GenericSAE`) -> sae_lens SAEs.

A folder (hub: `visaebench/<backbone>-saes/<config>/`) holds `sae.pt` (or `model.safetensors` / `model.pt`) and
`config.json` (or `config.yaml` / `.yml`). Two key sets:
- "simple": encoder.weight [H, D], encoder.bias [H], decoder.weight [H, D] (rows are atoms), decoder.bias [D]
  optional;
- overcomplete: encoder.final_block.0.weight / .bias, dictionary._weights [H, D] times exp(dictionary.multiplier),
  no decoder bias (as GenericSAE reads it: the saved rows, not overcomplete's re-normalised ones).
Encode: p = relu(x W_e^T + b_e) (no b_dec subtraction), then
- batchtopk: p * (p >= theta), theta = config "threshold", else `_running_threshold`, else 0 -> JumpReLUSAE. It
  tests pre > theta', theta' = the largest float32 below theta (pre >= theta iff pre > theta' in float32; for
  theta <= 0 both give relu(pre)). Exact in float32; in float64 the two differ only for pre in (theta', theta).
- topk: per-row top-k of p -> sae_lens TopKSAE (same values); jumprelu: p * (p > theta_i) -> JumpReLUSAE.
Decode: z W_d (+ b_d). Inputs were (x - mean[D]) / std (scalar) with statistics NOT shipped: loading warns, and
`norm_stats` folds them in exactly (family_base.fold_input_normalisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sae_clip_plugin.pretrained.family_base import (
    FamilyEntry,
    ModelFacts,
    check_config_dims,
    check_sae_state,
    first_hub_file,
    fold_input_normalisation,
    load_tensor_file,
    normalisation_note,
    read_config,
    read_norm_stats,
    refuse,
    require_keys,
    sae_cfg_dict,
    tensors_only,
    warn_missing_stats,
)

FAMILY = "visaebench"
CONVERSION_FUNC = "visaebench"
MODEL = ModelFacts("hf:openai/clip-vit-base-patch16", 224, 16, "transformers CLIPImageProcessor of the repo")
CLIP_RELEASE = "visaebench-clip-vit-b-16"
CLIP_REPO = "visaebench/clip-vitb16-saes"
CONFIGS = tuple(f"batchtopk_{x}x_k{k}" for x in (8, 16, 32) for k in (64, 128, 192, 256))
WEIGHT_FILES = ("sae.pt", "model.safetensors", "model.pt")
CONFIG_FILES = ("config.json", "config.yaml", "config.yml")
TRAINED_ON = "(x - mean[d]) / std (scalar), visaebench norm_stats.pt of the activation set"


def entries() -> list[FamilyEntry]:
    """The CLIP ViT-B/16 sweep: hidden_states[12] patch tokens = the output of block 11 (the last)."""
    hook = "blocks.11.hook_resid_post"
    out = []
    for name in CONFIGS:
        width, k = name.split("_")[1:]
        out.append(
            FamilyEntry(
                release=CLIP_RELEASE, sae_id=f"{hook}/{name}", repo_id=CLIP_REPO, path=name, model=MODEL.spec,
                hook_name=hook, family=FAMILY, token_selection="patches", architecture="jumprelu",
                conversion_func=CONVERSION_FUNC, d_sae=768 * int(width[:-1]), k=int(k[1:]),
                notes={"files": "sae.pt or model.safetensors, config.json or config.yaml (unverified offline)"},
            )
        )  # fmt: skip
    return out


def _weights(path: Path, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "encoder.weight" in sd:
        require_keys(path, sd, ("encoder.weight", "encoder.bias", "decoder.weight"), "visaebench (simple)")
        enc, dec = sd["encoder.weight"].float(), sd["decoder.weight"].float()
        b_dec = sd.get("decoder.bias")
        if enc.ndim != 2 or dec.shape != enc.shape:
            raise refuse(
                path, f"encoder.weight {tuple(enc.shape)} and decoder.weight {tuple(dec.shape)} are not both [H, D]",
                "a dictionary_learning ae.pt (decoder [D, H]) is not a visaebench file; load it as its own family",
            )  # fmt: skip
        enc_b = sd["encoder.bias"].float()
    elif "encoder.final_block.0.weight" in sd:
        keys = ("encoder.final_block.0.weight", "encoder.final_block.0.bias", "dictionary._weights")
        require_keys(path, sd, keys, "visaebench (overcomplete)")
        enc, enc_b = sd[keys[0]].float(), sd[keys[1]].float()
        dec, b_dec = sd[keys[2]].float(), None
        multiplier = sd.get("dictionary.multiplier")
        if multiplier is not None and float(multiplier) != 0.0:
            dec = dec * multiplier.float().exp()
    else:
        raise refuse(
            path, f"keys {sorted(sd)[:8]} are neither visaebench key set", "pass a visaebench sae.pt"
        )
    zeros = torch.zeros(enc.shape[1])
    return {
        "W_enc": enc.T.contiguous(),
        "b_enc": enc_b,
        "W_dec": dec,
        "b_dec": zeros if b_dec is None else b_dec.float(),
    }


def convert_visaebench(
    path: str | Path,
    config: dict[str, Any],
    sd: dict[str, torch.Tensor],
    *,
    norm_stats: Any = None,
    **facts: Any,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    activation = str(
        config.get("activation") or config.get("sae_type") or config.get("architecture") or "topk"
    )
    activation = activation.lower()
    state = _weights(path, sd)
    d_sae = state["W_enc"].shape[1]
    k = config.get("k")
    if activation == "batchtopk":
        theta = config.get("threshold")
        if theta is None and "_running_threshold" in sd:
            theta = float(sd["_running_threshold"])
        theta = torch.tensor(float(theta or 0.0), dtype=torch.float32)
        below = torch.nextafter(theta, torch.tensor(-torch.inf)) if theta > 0 else torch.tensor(0.0)
        state["threshold"] = below.expand(d_sae).clone()
        architecture, cfg_k = "jumprelu", None
    elif activation == "jumprelu":
        jt = sd.get("jump_thresholds", sd.get("thresholds"))
        state["threshold"] = torch.full((d_sae,), 0.01) if jt is None else jt.float().reshape(-1)
        architecture, cfg_k = "jumprelu", None
    elif activation == "topk":
        architecture, cfg_k = "topk", k
        if not isinstance(k, int) or isinstance(k, bool):
            raise refuse(path, f"a topk visaebench SAE needs an integer k in its config (got {k!r})", "add k")
    else:
        raise refuse(
            path, f"activation {activation!r} is not supported", "supported: batchtopk, topk, jumprelu"
        )
    d_in, d_sae = check_sae_state(path, state, cfg_k)
    if isinstance(k, int) and not isinstance(k, bool) and not 0 < k <= d_sae:
        raise refuse(path, f"k={k} is not in 1..d_sae={d_sae}", "fix k in the config")
    check_config_dims(
        path, config, {"input_dim": d_in, "d_model": d_in, "hidden_dim": d_sae, "dict_size": d_sae}
    )
    stats_from = None
    if norm_stats is not None:
        mean, std = read_norm_stats(norm_stats, d_in)
        state = fold_input_normalisation(state, False, mean, std)
        stats_from = str(norm_stats) if isinstance(norm_stats, (str, Path)) else "argument"
    else:
        warn_missing_stats(path, FAMILY, TRAINED_ON)
    source = {"format": "visaebench", "activation": activation, "k": k, **facts.pop("source", {})}
    if activation == "batchtopk":
        source["threshold"] = float(theta)
    cfg = sae_cfg_dict(
        architecture=architecture, d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False, model=facts.pop("model", None),
        hook_name=facts.pop("hook_name", None), family=FAMILY,
        token_selection=facts.pop("token_selection", None) or "patches", source=source,
        input_normalisation=normalisation_note(TRAINED_ON, stats_from is not None, stats_from), k=cfg_k,
    )  # fmt: skip
    return cfg, state


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def read(path: str | Path, **kwargs: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = _find(folder, WEIGHT_FILES) if path.is_dir() else path
    config_path = _find(folder, CONFIG_FILES)
    if weights is None or config_path is None:
        raise refuse(
            folder, f"needs one of {WEIGHT_FILES} and one of {CONFIG_FILES}", "download the whole folder"
        )
    sd = tensors_only(weights, load_tensor_file(weights))
    kwargs.setdefault("source", {}).update(path=str(weights))
    return convert_visaebench(weights, read_config(config_path), sd, **kwargs)


def sniff(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    has_weights = _find(folder, WEIGHT_FILES) is not None if path.is_dir() else path.name in WEIGHT_FILES
    config = _find(folder, CONFIG_FILES)
    if not (has_weights and config):
        return False
    try:
        cfg = read_config(config)
    except ValueError:
        return False
    return any(
        key in cfg for key in ("activation", "sae_type", "architecture", "expansion_factor", "hidden_dim")
    )


def hub_path(repo_id: str, folder_name: str, force_download: bool) -> str:
    sub = folder_name.strip("/")
    weights = first_hub_file(repo_id, tuple(f"{sub}/{n}" for n in WEIGHT_FILES), force_download)
    config = first_hub_file(repo_id, tuple(f"{sub}/{n}" for n in CONFIG_FILES), force_download)
    if weights is None or config is None:
        raise FileNotFoundError(
            f"{repo_id}/{sub}: no {'weights' if weights is None else 'config'} file ({WEIGHT_FILES} / {CONFIG_FILES}) "
            "on the hub or in the cache; download it once online, or load a local copy with load_sae(folder)"
        )
    return str(Path(weights).parent)
