"""CLIP-Scope (PyPI `clipscope` 0.1.8; files from the `sache` trainer, re-saved by vitsae's pull_to_hf) -> sae_lens.

A released file `<layer>_resid/<token_count>.pt` is torch.save({"model_state_dict": {pre_b [d_in], enc [d_in, F],
dec [F, d_in]}, "token_count", "dead_latents", "n_iter", "log_id", "d_in", "n_features", "k"}). clipscope's
TopKSAE encodes top-k((x - pre_b) @ enc) keeping the raw values (no ReLU, no encoder bias) and decodes
latent @ dec + pre_b -> RawTopKSAE with b_dec = pre_b, apply_b_dec_to_input, b_enc = 0.
Training standardised every batch with that batch's own per-dimension mean and std (sache `batch_norm`); those
statistics are not stored, and clipscope feeds raw activations: the metadata records it, nothing is folded.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from sae_clip_plugin.pretrained.family_base import (
    FamilyEntry,
    ModelFacts,
    check_sae_state,
    hub_file,
    load_tensor_file,
    refuse,
    repo_files,
    require_keys,
    sae_cfg_dict,
)

FAMILY = "clipscope"
CONVERSION_FUNC = "clipscope"
MODEL = ModelFacts(
    "hf:laion/CLIP-ViT-L-14-laion2B-s32B-b82K", 224, 14, "transformers CLIPProcessor of the repo"
)
RELEASE = "clipscope-clip-vit-l-14-laion2b"
REPO = "lewington/CLIP-ViT-L-scope"
LAYERS = (2, 5, 8, 11, 14, 17, 20, 22)
KNOWN_FILES = {
    22: "22_resid/1200013184.pt"
}  # the last checkpoint, as users name it; others: the largest count
TRAINED_ON = "each training batch standardised with its own per-dimension mean and std (not stored)"


def entries() -> list[FamilyEntry]:
    return [
        FamilyEntry(
            release=RELEASE, sae_id=f"blocks.{layer}.hook_resid_post", repo_id=REPO,
            path=KNOWN_FILES.get(layer, f"{layer}_resid"), model=MODEL.spec, hook_name=f"blocks.{layer}.hook_resid_post",
            family=FAMILY, token_selection="all", architecture="raw_topk", conversion_func=CONVERSION_FUNC,
            d_sae=65536, k=32,
        )
        for layer in LAYERS
    ]  # fmt: skip


def convert_clipscope(
    path: str | Path, obj: dict[str, Any], **facts: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    path = Path(path)
    require_keys(path, obj, ("model_state_dict",), FAMILY)
    sd = obj["model_state_dict"]
    if not isinstance(sd, dict):
        raise refuse(path, "model_state_dict is not a dict of tensors", "re-download it")
    require_keys(path, sd, ("pre_b", "enc", "dec"), FAMILY)
    state = {
        "W_enc": sd["enc"].float(), "W_dec": sd["dec"].float(), "b_dec": sd["pre_b"].float(),
        "b_enc": torch.zeros(sd["enc"].shape[-1]),
    }  # fmt: skip
    k = obj.get("k")
    if not isinstance(k, int) or isinstance(k, bool):
        raise refuse(path, f"k is {k!r}, not an integer", "released files carry k (32); add it")
    d_in, d_sae = check_sae_state(path, state, k)
    for key, actual in (("d_in", d_in), ("n_features", d_sae)):
        if isinstance(obj.get(key), int) and obj[key] != actual:
            raise refuse(
                path,
                f"says {key}={obj[key]} but the weights have {actual}",
                "the file is corrupt; re-download it",
            )
    source = {
        "format": "clipscope", "token_count": _plain(obj.get("token_count")), "n_iter": _plain(obj.get("n_iter")),
        "log_id": _plain(obj.get("log_id")), **facts.pop("source", {}),
    }  # fmt: skip
    cfg = sae_cfg_dict(
        architecture="raw_topk", d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True, model=facts.pop("model", None),
        hook_name=facts.pop("hook_name", None) or _hook_from_path(path), family=FAMILY,
        token_selection=facts.pop("token_selection", None) or "all", source=source,
        input_normalisation={"trained_on": TRAINED_ON, "stats_in_file": False, "folded": False},
        k=k,
    )  # fmt: skip
    return cfg, state


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def _hook_from_path(path: Path) -> str | None:
    match = re.fullmatch(r"(\d+)_resid", path.parent.name)
    return f"blocks.{int(match.group(1))}.hook_resid_post" if match else None


def _latest(names: list[str]) -> str | None:
    counts = [(int(m.group(1)), n) for n in names if (m := re.search(r"(?:^|/)(\d+)\.pt$", n))]
    return max(counts)[1] if counts else None


def read(path: str | Path, **facts: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        latest = _latest([p.name for p in path.glob("*.pt")])
        if latest is None:
            raise refuse(
                path, "holds no <token_count>.pt checkpoint", "pass a CLIP-Scope layer folder or file"
            )
        path = path / latest
    facts.setdefault("source", {}).update(path=str(path))
    return convert_clipscope(path, load_tensor_file(path), **facts)


def sniff(path: Path) -> bool:
    """A torch zip whose pickle names model_state_dict and pre_b (read without unpickling)."""
    if path.is_dir():
        latest = _latest([p.name for p in path.glob("*.pt")])
        if latest is None:
            return False
        path = path / latest
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if pkl is None or archive.getinfo(pkl).file_size > 1 << 20:
                return False
            data = archive.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return False
    return b"model_state_dict" in data and b"pre_b" in data


def hub_path(repo_id: str, folder_name: str, force_download: bool) -> str:
    """`22_resid/1200013184.pt`, or a layer folder `5_resid`: its checkpoint with the largest token count."""
    name = folder_name.strip("/")
    if not name.endswith(".pt"):
        latest = _latest([n for n in repo_files(repo_id) if n.startswith(f"{name}/")])
        if latest is None:
            raise FileNotFoundError(
                f"{repo_id}: no {name}/<token_count>.pt on the hub listing or in the cache; download one once online"
            )
        name = latest
    return hub_file(repo_id, name, force_download)
