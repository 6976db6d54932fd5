"""What the third-party SAE families (saev, dictionary_learning, visaebench, CLIP-Scope) share.

Each family module reads its own files and hands back a sae_lens (cfg dict, state dict) pair in sae_lens'
layout (W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]); this module holds the checks
(one-line errors naming the file and the fix), the metadata of our conventions (docs/conventions.md), the
folding of input-normalisation statistics into the weights and the Hugging Face access. It never imports
sae_lens at module level (sae_lens' import runs our registration, which imports this module).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from safetensors.torch import load_file

from sae_clip_plugin.yaml_files import load_yaml_text

# the family files hold plain tensor dicts; anything bigger than this in a header line is not a header
MAX_HEADER_BYTES = 1 << 20
# these families hook models loaded without any processing (open_clip / transformers as they come)
NO_WEIGHT_PROCESSING = {"fold_ln": False, "center_writing_weights": False, "fold_value_biases": False}
_CONTEXT = {"all": lambda n: n, "cls": lambda n: 1, "patches": lambda n: n - 1}


class FamilyFormatError(ValueError):
    """A family file that cannot be what it claims; the message names the file and the fix."""


def refuse(path: Any, problem: str, fix: str) -> FamilyFormatError:
    return FamilyFormatError(f"{path}: {problem}; {fix}")


def load_tensor_file(path: str | Path, source: Any = None, what: str = "SAE checkpoint") -> dict[str, Any]:
    """A torch.save'd dict (or a .safetensors file) read without running any pickled code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as err:
            raise refuse(path, f"not a readable safetensors file ({err})", "re-download it") from None
    try:
        obj = torch.load(source if source is not None else path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise refuse(
            path,
            f"not a plain tensor {what} torch.load(weights_only=True) can read ({first[:200]})",
            "re-download it; never load an untrusted file with weights_only=False",
        ) from None
    if not isinstance(obj, Mapping):
        raise refuse(
            path, f"holds a {type(obj).__name__}, not a dict of tensors", "pass the family's own file"
        )
    return dict(obj)


def tensors_only(path: Any, obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise refuse(
            path, f"holds no tensors (keys {sorted(map(str, obj))[:8]})", "pass the SAE weights file"
        )
    return out


def require_keys(path: Any, state: Mapping[str, Any], keys: tuple[str, ...], family: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise refuse(
            path,
            f"lacks {missing} for a {family} SAE (it has {sorted(state)[:10]})",
            "the file is truncated, of another family or another architecture; re-download it",
        )


def check_sae_state(path: Any, state: Mapping[str, torch.Tensor], k: int | None = None) -> tuple[int, int]:
    """(d_in, d_sae) after checking shapes, finiteness and k of a state dict in sae_lens' layout."""
    if state["W_enc"].ndim != 2:
        raise refuse(path, f"encoder weight has shape {tuple(state['W_enc'].shape)}", "re-download it")
    d_in, d_sae = (int(s) for s in state["W_enc"].shape)
    expected = {"W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,), "threshold": (d_sae,)}
    wrong = {n: tuple(t.shape) for n, t in state.items() if n in expected and tuple(t.shape) != expected[n]}
    if wrong:
        raise refuse(
            path,
            f"weights have inconsistent shapes {wrong} for d_in={d_in}, d_sae={d_sae}",
            "the file is corrupt or mixes two SAEs; re-download it",
        )
    bad = [n for n, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise refuse(
            path, f"{bad} hold NaN or infinite values", "the training diverged or the file is corrupt"
        )
    if k is not None and not 0 < int(k) <= d_sae:
        raise refuse(path, f"k={k} is not in 1..d_sae={d_sae}", "fix k in the SAE's config")
    return d_in, d_sae


def check_config_dims(path: Any, stated: Mapping[str, Any], actual: Mapping[str, int]) -> None:
    for key, value in actual.items():
        said = stated.get(key)
        if isinstance(said, int) and not isinstance(said, bool) and said != value:
            raise refuse(
                path,
                f"its config says {key}={said} but the weights have {value}",
                "the config belongs to another SAE; use the config written with these weights",
            )


def read_config(path: Path) -> dict[str, Any]:
    """A JSON or YAML config (yaml_files.load_yaml_text), as a dict."""
    text = path.read_text(encoding="utf-8")
    try:
        is_yaml = path.suffix in (".yaml", ".yml")  # bounded: a hub file could be an alias bomb
        cfg = load_yaml_text(text, str(path)) if is_yaml else json.loads(text)
    except Exception as err:
        detail = " ".join(str(err).split())[:200]
        raise refuse(path, f"is not valid {path.suffix[1:].upper()} ({detail})", "restore the file") from None
    if not isinstance(cfg, dict):
        raise refuse(path, f"holds a {type(cfg).__name__}, not a mapping", "restore the file")
    return cfg


# ---------------------------------------------------------------- metadata and cfg dict


@dataclass(frozen=True)
class ModelFacts:
    """The model a family's SAEs read: our spec string and its token geometry."""

    spec: str
    image_size: int
    patch_size: int
    preprocessing: str = ""

    @property
    def n_tokens(self) -> int:
        return 1 + (self.image_size // self.patch_size) ** 2


def sae_cfg_dict(
    *,
    architecture: str,
    d_in: int,
    d_sae: int,
    apply_b_dec_to_input: bool,
    model: ModelFacts | None,
    hook_name: str | None,
    token_selection: str,
    family: str,
    source: Mapping[str, Any],
    input_normalisation: Mapping[str, Any],
    k: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, Any]:
    # here, not at module level: importing sae_lens runs our registration, which imports this module (cycle);
    # only called while loading, when sae_lens is imported anyway
    import sae_lens

    n_tokens = model.n_tokens if model else None
    metadata: dict[str, Any] = {
        "model_name": model.spec if model else None,
        "hook_name": hook_name,
        "hook_head_index": None,
        "context_size": _CONTEXT[token_selection](n_tokens) if n_tokens else None,
        "prepend_bos": False,
        "token_selection": token_selection,
        "image_size": model.image_size if model else None,
        "patch_size": model.patch_size if model else None,
        "n_tokens": n_tokens,
        "cls_token_index": 0,
        "weight_processing": dict(NO_WEIGHT_PROCESSING),
        "preprocessing": model.preprocessing if model else None,
        "sae_lens_version": sae_lens.__version__,
        "family": family,
        "source_format": family,
        "source": dict(source),
        "input_normalisation": dict(input_normalisation),
    }
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "dtype": dtype,
        "device": device,
        "apply_b_dec_to_input": bool(apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if k is not None:
        cfg["k"] = int(k)
    return cfg


def finish(
    cfg: dict[str, Any], state: Mapping[str, torch.Tensor], overrides: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Apply sae_lens-style cfg_overrides (dtype/device at top level, the rest into metadata)."""
    overrides = dict(overrides or {})
    dtype = str(overrides.pop("dtype", None) or cfg["dtype"]).removeprefix("torch.")
    device = str(overrides.pop("device", None) or cfg["device"])
    cfg["dtype"], cfg["device"] = dtype, device
    for key, value in overrides.items():
        (cfg if key in ("d_in", "d_sae", "k", "apply_b_dec_to_input") else cfg["metadata"])[key] = value
    return cfg, {n: t.to(device=device, dtype=getattr(torch, dtype)) for n, t in state.items()}


# ---------------------------------------------------------------- input normalisation


def read_norm_stats(norm_stats: Any, d_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [d_in], std [d_in] or scalar) in float64 from a mapping or a file (.pt / .json / .safetensors).

    Keys: `mean` (or saev's `act_mean`) and `std` (or saev's `scalar` / `act_norm`); a mean of 0 and a std of 1
    are used for a missing one.
    """
    where = norm_stats
    if isinstance(norm_stats, (str, Path)):
        path = Path(norm_stats)
        norm_stats = (
            read_config(path) if path.suffix == ".json" else load_tensor_file(path, what="statistics file")
        )
    if not isinstance(norm_stats, Mapping):
        raise FamilyFormatError(
            f"norm_stats must be a mapping {{'mean': [d_in], 'std': float}} or a file holding one, got {type(where)}"
        )
    names = {"mean": ("mean", "act_mean"), "std": ("std", "scalar", "act_norm")}
    found = {
        n: next((norm_stats[a] for a in aliases if a in norm_stats), None) for n, aliases in names.items()
    }
    if found["mean"] is None and found["std"] is None:
        raise FamilyFormatError(f"norm_stats {sorted(norm_stats)} has neither 'mean' nor 'std'")
    mean = torch.as_tensor(0.0 if found["mean"] is None else found["mean"], dtype=torch.float64).flatten()
    std = torch.as_tensor(1.0 if found["std"] is None else found["std"], dtype=torch.float64).flatten()
    for name, value in (("mean", mean), ("std", std)):
        if value.numel() not in (1, d_in):
            raise FamilyFormatError(
                f"norm_stats {name} has {value.numel()} values; expected 1 or d_in={d_in}"
            )
        if not bool(torch.isfinite(value).all()):
            raise FamilyFormatError(f"norm_stats {name} holds NaN or infinite values")
    if bool((std <= 0).any()):
        raise FamilyFormatError("norm_stats std must be > 0")
    return mean.expand(d_in).clone(), (std if std.numel() > 1 else std.reshape(()))


def fold_input_normalisation(
    state: Mapping[str, torch.Tensor], apply_b_dec_to_input: bool, mean: torch.Tensor, std: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Weights that take raw x for an SAE trained on x_n = (x - m) / s, exactly (s: scalar or per dimension).

    The family computes pre = (x_n - [b_dec]) W + b_enc and x_hat = s * (f W_dec + b_dec) + m. With
    W' = diag(1/s) W, W_dec' = W_dec diag(s) and b_dec' = s * b_dec + m:
    - apply_b_dec_to_input (sae_lens subtracts b_dec' from x): (x - b_dec') W' = ((x - m)/s - b_dec) W, so
      b_enc' = b_enc;
    - otherwise: x W' + b_enc' = x_n W + b_enc needs b_enc' = b_enc - (m / s) W.
    Decoding: f W_dec' + b_dec' = s * (f W_dec + b_dec) + m, the de-normalised reconstruction. The pre-activation
    is unchanged, so thresholds and top-k selections are too. Computed in float64, returned in each tensor's dtype.
    """
    w_enc = state["W_enc"].double()
    scale = std.double().reshape(-1, 1) if std.ndim else std.double()
    out = dict(state)
    out["W_enc"] = (w_enc / scale).to(state["W_enc"].dtype)
    out["W_dec"] = (state["W_dec"].double() * std.double()).to(state["W_dec"].dtype)
    out["b_dec"] = (state["b_dec"].double() * std.double() + mean.double()).to(state["b_dec"].dtype)
    if not apply_b_dec_to_input:
        shift = (mean.double() / std.double()) @ w_enc
        out["b_enc"] = (state["b_enc"].double() - shift).to(state["b_enc"].dtype)
    return out


def normalisation_note(trained_on: str, folded: bool, where: str | None = None) -> dict[str, Any]:
    return {"trained_on": trained_on, "stats_in_file": False, "folded": folded, "stats_from": where}


def warn_missing_stats(where: Any, family: str, trained_on: str) -> None:
    warnings.warn(
        f"{where}: {family} SAEs were trained on {trained_on}, and the file does not carry those statistics; the "
        "SAE is loaded as it is, for the activations the file's own code is given. Pass norm_stats={'mean': "
        "tensor[d_in], 'std': float} (load_sae(path, norm_stats=...), or fold_norm_stats(sae, ...) after "
        "SAE.from_pretrained) to fold them into the weights",
        stacklevel=3,
    )


def fold_norm_stats(sae: Any, norm_stats: Any) -> Any:
    """Fold input-normalisation statistics into a loaded family SAE, in place (see fold_input_normalisation)."""
    meta = sae.cfg.metadata
    note = dict(meta.get("input_normalisation") or {})
    if note.get("folded"):
        raise ValueError(
            "this SAE already has normalisation statistics folded in; load it again to fold others"
        )
    mean, std = read_norm_stats(norm_stats, sae.cfg.d_in)
    names = ("W_enc", "b_enc", "W_dec", "b_dec")
    with torch.no_grad():
        state = {n: getattr(sae, n).data for n in names}
        folded = fold_input_normalisation(state, sae.cfg.apply_b_dec_to_input, mean, std)
        for n in names:
            getattr(sae, n).data.copy_(folded[n])
    note.update(
        folded=True, stats_from=str(norm_stats) if isinstance(norm_stats, (str, Path)) else "argument"
    )
    meta.input_normalisation = note
    return sae


# ---------------------------------------------------------------- hub access


def hub_file(repo_id: str, filename: str, force_download: bool = False) -> str:
    """hf_hub_download, from the cache alone (at once) when the hub cannot be reached."""
    # here, not at module level: pretrained.registry imports this module via families (cycle)
    from sae_clip_plugin.pretrained.registry import hub_unreachable_reason

    offline = hub_unreachable_reason() is not None
    return hf_hub_download(
        repo_id=repo_id,
        filename=filename,
        force_download=force_download and not offline,
        local_files_only=offline,
    )


def first_hub_file(repo_id: str, names: tuple[str, ...], force_download: bool = False) -> str | None:
    """The first of `names` the repo has (None if none)."""
    for name in names:
        try:
            return hub_file(repo_id, name, force_download)
        except (EntryNotFoundError, LocalEntryNotFoundError):
            continue
    return None


def repo_files(repo_id: str) -> list[str]:
    """The repo's file paths: the hub listing when online, else those of the cached snapshots."""
    # here, not at module level: pretrained.registry imports this module via families (cycle)
    from sae_clip_plugin.pretrained.registry import hub_unreachable_reason

    try:
        if hub_unreachable_reason() is not None:
            raise ConnectionError(hub_unreachable_reason())
        return list(HfApi().list_repo_files(repo_id))
    except Exception:
        snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
        return sorted(
            {str(p.relative_to(s)) for s in snapshots.glob("*") for p in s.rglob("*") if p.is_file()}
        )


@dataclass(frozen=True)
class FamilyEntry:
    """One registered released SAE: its release, sae_id, where it lives and what our metadata says."""

    release: str
    sae_id: str
    repo_id: str
    path: str  # inside the repo: a file, or a folder the family loader resolves
    model: str
    hook_name: str
    family: str
    token_selection: str
    architecture: str
    conversion_func: str
    d_sae: int | None = None
    k: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)
