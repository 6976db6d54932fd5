"""saev (OSU-NLP-Group, PyPI `saev` 0.1.0 and the GitHub schema-5 format) -> sae_lens SAEs.

A saev `sae.pt` is one JSON header line, then `torch.save(state_dict)` (W_enc [d_model, d_sae], b_enc,
W_dec [d_sae, d_model], b_dec; BatchTopK adds the scalar buffer `activation.threshold`).
- Header without "schema" (saev 0.1.0, `nn.dump`): f = relu((x - b_dec) W_enc + b_enc) -> StandardSAE with
  apply_b_dec_to_input=True.
- Schema >= 2 (GitHub, since commit e7ca004 "don't remove decoder bias", 2025-07-31): h = x W_enc + b_enc, no
  b_dec subtraction. Relu -> StandardSAE; TopK keeps the raw top-k of h (may be negative) -> RawTopKSAE;
  BatchTopK in eval is h * (h > theta), or h * (h > 0) when theta <= 0 -> JumpReLUSAE with threshold
  max(theta, 0) everywhere (relu(h) * (h > t) = h * (h > t) for t >= 0: exact).
- Schema 1 was written both before and after that commit: read as saev's current loader does (no subtraction),
  with a warning; pass legacy_b_dec=True for a file trained before 2025-07-31.
Matryoshka files decode prefixes; the full reconstruction (the last prefix) is f W_dec + b_dec.
saev trains on (x - act_mean) / scalar by default (0.1.0 `DataLoad.scale_mean/scale_norm`); the statistics are
never saved, so loading warns and `norm_stats` folds them in (family_base.fold_input_normalisation).
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from sae_clip_plugin.pretrained.family_base import (
    MAX_HEADER_BYTES,
    FamilyEntry,
    ModelFacts,
    check_config_dims,
    check_sae_state,
    fold_input_normalisation,
    hub_file,
    load_tensor_file,
    normalisation_note,
    read_norm_stats,
    refuse,
    require_keys,
    sae_cfg_dict,
    warn_missing_stats,
)

FAMILY = "saev"
CONVERSION_FUNC = "saev"
MODEL = ModelFacts("open_clip:ViT-B-16/openai", 224, 16, "open_clip ViT-B-16 'openai' preprocess")
CLIP_RELEASE = "saev-clip-vit-b-16-in1k-24k"
CLIP_REPO = "osunlp/SAE_CLIP_24K_ViT-B-16_IN1K"
TRAINED_ON = (
    "(x - act_mean) / scalar with scalar = mean ||x - act_mean|| / sqrt(d) (saev scale_mean/scale_norm)"
)
_ACTIVATION_KEYS = {"relu": "Relu", "top-k": "TopK", "topk": "TopK", "batch-top-k": "BatchTopK"}


def entries() -> list[FamilyEntry]:
    """The released CLIP SAE (`sae.pt` at the repo root; width 24576 from the repo name, unverified offline)."""
    hook = "blocks.10.hook_resid_post"  # output of open_clip resblocks[10] (saev's default layer -2 of 12)
    return [
        FamilyEntry(
            release=CLIP_RELEASE, sae_id=hook, repo_id=CLIP_REPO, path="sae.pt", model=MODEL.spec, hook_name=hook,
            family=FAMILY, token_selection="patches", architecture="standard", conversion_func=CONVERSION_FUNC,
            d_sae=24576, notes={"format": "saev 0.1.0 (legacy header, b_dec subtracted)"},
        )
    ]  # fmt: skip


def read_saev_file(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, state dict): the JSON line (at most 1 MB) and the torch.save'd tensors after it."""
    path = Path(path)
    with open(path, "rb") as fd:
        line = fd.readline(MAX_HEADER_BYTES + 1)
        if line.startswith(b"PK\x03\x04"):
            raise refuse(
                path, "has no saev JSON header line (a bare torch.save file)", "pass the file nn.dump wrote"
            )
        if len(line) > MAX_HEADER_BYTES:
            raise refuse(
                path, "has a header line longer than 1 MB", "this is not a saev sae.pt; re-download it"
            )
        rest = fd.read()
    try:
        header = json.loads(line)
    except ValueError:
        raise refuse(
            path, "its first line is not a JSON header", "pass a sae.pt written by saev's nn.dump"
        ) from None
    if not isinstance(header, dict):
        raise refuse(path, f"its header is a JSON {type(header).__name__}, not an object", "re-download it")
    obj = load_tensor_file(path, source=io.BytesIO(rest))
    return header, {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _activation(
    path: Path, header: dict[str, Any]
) -> tuple[str, dict[str, Any], bool | None, dict[str, Any]]:
    """(activation class name, its params, b_dec subtracted at encode (None: unknown), the model config)."""
    schema = header.get("schema")
    if schema is None:  # saev 0.1.0: {"d_vit", "exp_factor", ...}, ReLU, b_dec subtracted
        if "d_vit" not in header:
            raise refuse(
                path, f"legacy saev header without d_vit (keys {sorted(header)[:8]})", "re-download it"
            )
        cfg = {"d_model": header["d_vit"]}
        if isinstance(header.get("exp_factor"), int):
            cfg["d_sae"] = header["d_vit"] * header["exp_factor"]
        return "Relu", {}, True, cfg
    if schema not in (1, 2, 3, 4, 5) or not isinstance(header.get("cfg"), dict):
        raise refuse(
            path, f"saev header schema {schema!r} is not one this plugin knows (1-5)", "update the plugin"
        )
    cfg = header["cfg"]
    if schema == 1 and header.get("cls") in ("Relu", "TopK", "BatchTopK"):  # format 1A
        name, params = header["cls"], {"top_k": cfg.get("top_k", 32)}
    else:
        act = cfg.get("activation")
        if not isinstance(act, dict):
            raise refuse(path, "saev header without an activation", "re-download it")
        params = act.get("params") if isinstance(act.get("params"), dict) else act
        name = act.get("cls") or _ACTIVATION_KEYS.get(str(params.get("key")))
    if name not in ("Relu", "TopK", "BatchTopK"):
        raise refuse(path, f"saev activation {name!r} is not supported", "supported: Relu, TopK, BatchTopK")
    return name, params, (None if schema == 1 else False), cfg


def convert_saev(
    path: str | Path,
    header: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    legacy_b_dec: bool | None = None,
    norm_stats: Any = None,
    **facts: Any,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    name, params, subtract, model_cfg = _activation(path, header)
    if subtract is None:
        if legacy_b_dec is None:
            warnings.warn(
                f"{path}: saev schema-1 files were written both before and after saev stopped subtracting b_dec at "
                "encode (2025-07-31); read as saev's current loader does (no subtraction). Pass legacy_b_dec=True for "
                "a file trained before that date",
                stacklevel=3,
            )
        subtract = bool(legacy_b_dec)
    elif legacy_b_dec is not None:
        subtract = bool(legacy_b_dec)
    require_keys(path, state, ("W_enc", "b_enc", "W_dec", "b_dec"), FAMILY)
    sae_state = {n: state[n].float() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    k = None
    if name == "TopK":
        architecture, k = "raw_topk", params.get("top_k")
        if not isinstance(k, int) or isinstance(k, bool):
            raise refuse(path, f"saev TopK header has top_k={k!r}", "fix top_k in the header")
    elif name == "BatchTopK":
        architecture = "jumprelu"
        require_keys(path, state, ("activation.threshold",), "saev BatchTopK")
        theta = state["activation.threshold"].float().reshape(-1)
        if theta.numel() != 1:
            raise refuse(path, f"activation.threshold has {theta.numel()} values, not 1", "re-download it")
        sae_state["threshold"] = theta.clamp(min=0.0).expand(state["W_enc"].shape[-1]).clone()
    else:
        architecture = "standard"
    d_in, d_sae = check_sae_state(path, sae_state, k)
    check_config_dims(path, model_cfg, {"d_model": d_in, "d_sae": d_sae})
    stats_from = None
    if norm_stats is not None:
        mean, std = read_norm_stats(norm_stats, d_in)
        sae_state = fold_input_normalisation(sae_state, subtract, mean, std)
        stats_from = str(norm_stats) if isinstance(norm_stats, (str, Path)) else "argument"
    else:
        warn_missing_stats(path, FAMILY, TRAINED_ON)
    model = facts.pop("model", None)
    source = {
        "format": "saev", "schema": header.get("schema"), "lib": header.get("lib"), "commit": header.get("commit"),
        "activation": name, "b_dec_subtracted_at_encode": subtract, **facts.pop("source", {}),
    }  # fmt: skip
    cfg = sae_cfg_dict(
        architecture=architecture, d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=subtract, model=model,
        hook_name=facts.pop("hook_name", None) or _hook_from_path(path), family=FAMILY,
        token_selection=facts.pop("token_selection", None) or "patches", source=source,
        input_normalisation=normalisation_note(TRAINED_ON, stats_from is not None, stats_from), k=k,
    )  # fmt: skip
    return cfg, sae_state


def _hook_from_path(path: Path) -> str | None:
    """saev's multi-checkpoint repos keep `layer_<N>/<run>/sae.pt`, N the block whose output was recorded."""
    for part in reversed(path.parts):
        match = re.fullmatch(r"layer_(\d+)", part)
        if match:
            return f"blocks.{int(match.group(1))}.hook_resid_post"
    return None


def read(path: str | Path, **kwargs: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    if path.is_dir():
        path = path / "sae.pt"
    header, state = read_saev_file(path)
    return convert_saev(path, header, state, **{"source": {"path": str(path)}, **kwargs})


def sniff(path: Path) -> bool:
    """A file (or folder's sae.pt) whose first byte opens a JSON object: saev's header line."""
    file = path / "sae.pt" if path.is_dir() else path
    if not file.is_file():
        return False
    with open(file, "rb") as fd:
        return fd.read(1) == b"{"


def hub_path(repo_id: str, folder_name: str, force_download: bool) -> str:
    name = folder_name.strip("/")
    return hub_file(repo_id, name if name.endswith(".pt") else f"{name}/sae.pt".lstrip("/"), force_download)
