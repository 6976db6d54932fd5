"""The released Prisma CLIP ViT-B/32 SAEs as sae_lens releases (docs/conventions.md, "Released SAEs").

After `register_pretrained_releases()`, `sae_lens.SAE.from_pretrained(release, sae_id)` loads them:

| release | sae_id | hub repos |
| --- | --- | --- |
| `prisma-clip-vit-b-32-vanilla-x64` | `blocks.{L}.hook_{resid_post,mlp_out}/l1_{1e-05,5e-05,8e-05,0.0001}` | `sparse-autoencoder-clip-b-32-sae-vanilla-x64-layer-{L}-hook_{..}-l1-{..}` |
| `prisma-clip-vit-b-32-topk-64-cls` | `blocks.{L}.hook_{resid_post,mlp_out}` | `sae-top_k-64-cls_only-layer_{L}-hook_{..}` |
| `prisma-clip-vit-b-32-celeba-topk-64-patches` | `blocks.{10,11}.hook_resid_post` | `celeba-sae-top_k-64-patches_only-layer_{L}-hook_resid_post-{..}` |
| `prisma-clip-vit-b-32-imagenet-sweep-vanilla-x64-spatial-max` | `blocks.{7,8,9,11}.hook_resid_post` | `imagenet-sweep-vanilla-x64-Spatial_max_{L}-hook_resid_post-{..}` |

The ImageNet sweep of CLS-token vanilla SAEs (`imagenet-sweep-vanilla-x64-CLS_{L}-...`) is not registered: the
full repo names (they end in numbers) are not known offline. Load one by its repo id with
`SAE.from_pretrained("Prisma-Multimodal/<repo>", "weights.pt", converter=prisma_huggingface_loader)`.

sae_id is the transformer_lens hook name; the vanilla family has four l1 values per hook, so its
ids carry an `/l1_<value>` suffix (the value as spelled in the repo name). A sae_lens release holds
one `repo_id`, but each Prisma SAE has its own repo: the release's repo_id is the hub namespace
(`Prisma-Multimodal`) and each path is `<repo name>/<weights file>`. Any other Prisma repo loads with
`SAE.from_pretrained("<org>/<repo>", "<weights file>", converter=prisma_huggingface_loader)`.

Injection (sae_lens has no public API for third-party releases): the loader goes into
`NAMED_PRETRAINED_SAE_LOADERS` / `NAMED_PRETRAINED_SAE_CONFIG_GETTERS` under "prisma_vision", and
`get_pretrained_saes_directory` (an lru-cached yaml parse, imported by name into several sae_lens
modules) is replaced in those modules by a wrapper that adds our releases to the cached dict on every
call: no yaml parse or network at registration, and our releases survive `cache_clear()`.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from sae_clip_plugin.hub import hub_unreachable_reason
from sae_clip_plugin.pretrained.architectures import register_own_architecture
from sae_clip_plugin.pretrained.families import family_lookups, family_rows, register_families
from sae_clip_plugin.pretrained.prisma import (
    WEIGHT_FILE_PREFERENCE,
    apply_overrides,
    convert_prisma,
    decode_prisma_value,
    matching_weight_files,
    prisma_sae_config,
    read_prisma_checkpoint,
)

MODEL_SPEC = "open_clip:ViT-B-32/datacomp_xl_s13b_b90k"
NAMESPACE = "Prisma-Multimodal"
CONVERSION_FUNC = "prisma_vision"
VANILLA_RELEASE = "prisma-clip-vit-b-32-vanilla-x64"
CLS_TOPK_RELEASE = "prisma-clip-vit-b-32-topk-64-cls"
CELEBA_RELEASE = "prisma-clip-vit-b-32-celeba-topk-64-patches"
SPATIAL_RELEASE = "prisma-clip-vit-b-32-imagenet-sweep-vanilla-x64-spatial-max"
# the Spatial_max repos known by name (layer -> suffix of the repo name); their token selection (the 49
# patches) is as third-party users describe them, not read from a config: unverified
SPATIAL_REPO_SUFFIX = {
    7: "984.1376953125-99",
    8: "965.125-99",
    9: "854.891540527344-99",
    11: "829.0498046875-99",
}
VANILLA_L1 = ("1e-05", "5e-05", "8e-05", "0.0001")
CELEBA_REPO_SUFFIX = {10: "64-85", 11: "128-89"}  # the repos found on the hub (k-ev in the name)
HOOKS = ("hook_resid_post", "hook_mlp_out")
_WRAPPER_FLAG = "_sae_clip_plugin_wrapper"


@dataclass(frozen=True)
class PrismaEntry:
    """One released SAE: where it lives and what our metadata says about it."""

    release: str
    sae_id: str
    repo_id: str
    filename: str
    hook_name: str
    layer: int
    family: str
    token_selection: str
    architecture: str
    l1_coefficient: float | None = None
    k: int | None = None

    @property
    def path(self) -> str:
        return f"{self.repo_id.split('/', 1)[1]}/{self.filename}"


def _resid_post_family(
    release: str,
    family: str,
    repo_template: str,
    suffixes: dict[int, str],
    architecture: str,
    k: int | None = None,
) -> list[PrismaEntry]:
    """Patch-token SAEs at blocks.{layer}.hook_resid_post, one repo per layer (repo names end in a suffix)."""
    entries = []
    for layer, suffix in suffixes.items():
        hook = f"blocks.{layer}.hook_resid_post"
        repo = f"{NAMESPACE}/" + repo_template.format(layer=layer, suffix=suffix)
        entries.append(
            PrismaEntry(
                release=release, sae_id=hook, hook_name=hook, repo_id=repo, filename="weights.pt", layer=layer,
                family=family, token_selection="patches", architecture=architecture, k=k,
            )
        )  # fmt: skip
    return entries


@functools.cache
def prisma_entries() -> tuple[PrismaEntry, ...]:
    """All registered Prisma SAEs (vanilla x64, CLS-only TopK, CelebA TopK)."""
    out = []
    for layer in range(12):
        for hook in HOOKS:
            name = f"blocks.{layer}.{hook}"
            common = {"hook_name": name, "layer": layer}
            for l1 in VANILLA_L1:
                repo = (
                    f"{NAMESPACE}/sparse-autoencoder-clip-b-32-sae-vanilla-x64-layer-{layer}-{hook}-l1-{l1}"
                )
                out.append(
                    PrismaEntry(
                        release=VANILLA_RELEASE, sae_id=f"{name}/l1_{l1}", repo_id=repo,
                        filename="n_images_2600058.pt", family="vanilla-x64", token_selection="all",
                        architecture="standard", l1_coefficient=float(l1), **common,
                    )
                )  # fmt: skip
            out.append(
                PrismaEntry(
                    release=CLS_TOPK_RELEASE, sae_id=name, repo_id=f"{NAMESPACE}/sae-top_k-64-cls_only-layer_{layer}-{hook}",
                    filename="weights.pt", family="topk-64-cls", token_selection="cls", architecture="topk", k=64,
                    **common,
                )
            )  # fmt: skip
    celeba = "celeba-sae-top_k-64-patches_only-layer_{layer}-hook_resid_post-{suffix}"
    out += _resid_post_family(
        CELEBA_RELEASE, "celeba-topk-64-patches", celeba, CELEBA_REPO_SUFFIX, "topk", k=64
    )
    spatial = "imagenet-sweep-vanilla-x64-Spatial_max_{layer}-hook_resid_post-{suffix}"
    out += _resid_post_family(
        SPATIAL_RELEASE, "imagenet-sweep-vanilla-x64-spatial-max", spatial, SPATIAL_REPO_SUFFIX, "standard"
    )
    return tuple(out)


@functools.cache
def _entries_by_repo() -> dict[str, PrismaEntry]:
    return {e.repo_id: e for e in prisma_entries()}


def list_pretrained() -> list[dict[str, Any]]:
    """One row per registered SAE: release, sae_id, repo_id, filename, model, hook_name, family, l1/k..."""
    rows = []
    for e in prisma_entries():
        rows.append(
            {
                "release": e.release,
                "sae_id": e.sae_id,
                "repo_id": e.repo_id,
                "filename": e.filename,
                "model": MODEL_SPEC,
                "hook_name": e.hook_name,
                "layer": e.layer,
                "family": e.family,
                "token_selection": e.token_selection,
                "architecture": e.architecture,
                "l1_coefficient": e.l1_coefficient,
                "k": e.k,
                # the x64 families' width is in their name (768 x 64); the TopK repos do not state theirs
                "d_sae": 768 * 64 if "x64" in e.family else None,
            }
        )
    return rows + family_rows()  # saev, visaebench, CLIP-Scope (families.py)


@functools.cache
def _lookups() -> dict[str, Any]:
    # here, not at module level: importing sae_lens runs our registration, which imports this module (cycle)
    from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

    by_release: dict[str, list[PrismaEntry]] = {}
    for e in prisma_entries():
        by_release.setdefault(e.release, []).append(e)
    return {
        release: PretrainedSAELookup(
            release=release,
            repo_id=NAMESPACE,
            model=MODEL_SPEC,
            conversion_func=CONVERSION_FUNC,
            saes_map={e.sae_id: e.path for e in entries},
            # the defaults sae_lens' yaml parser fills in for entries without these numbers
            expected_var_explained={e.sae_id: 1.0 for e in entries},
            expected_l0={e.sae_id: 0.0 for e in entries},
            neuronpedia_id={e.sae_id: None for e in entries},
            norm_scaling_factor={},
            config_overrides=None,
        )
        for release, entries in by_release.items()
    }


# ---------------------------------------------------------------- hub access


def _locate(repo_id: str, folder_name: str) -> tuple[str, str | None]:
    """(full repo id, file) from a release's (namespace, "<repo>/<file>") or a direct ("org/repo", "<file>")."""
    if "/" in repo_id:
        return repo_id, folder_name.strip("/") or None
    repo_name, _, filename = folder_name.strip("/").partition("/")
    return f"{repo_id}/{repo_name}", filename or None


def _repo_pt_files(repo_id: str) -> list[str]:
    """Weight-file candidates: the hub listing when online, else the files of the cached snapshots."""
    try:
        if hub_unreachable_reason() is not None:
            raise ConnectionError(hub_unreachable_reason())
        names = HfApi().list_repo_files(repo_id)
    except Exception:  # offline or unreachable: look in the local cache
        snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
        names = sorted({p.name for p in snapshots.glob("*/*")})
    return [n for n in names if n.endswith((".pt", ".pth"))]


def _download(repo_id: str, filename: str, force_download: bool) -> str:
    offline = hub_unreachable_reason() is not None  # then only the cache, at once, instead of retrying
    return hf_hub_download(
        repo_id=repo_id,
        filename=filename,
        force_download=force_download and not offline,
        local_files_only=offline,
    )


def _weights_path(repo_id: str, filename: str | None, force_download: bool) -> str:
    if filename:
        try:
            return _download(repo_id, filename, force_download)
        except EntryNotFoundError as err:
            first_error: Exception | None = err
    else:
        first_error = None
    candidates = _repo_pt_files(repo_id)
    for pattern in WEIGHT_FILE_PREFERENCE:  # same preference as for local folders
        matching = matching_weight_files(candidates, pattern)
        if len(matching) == 1:
            return _download(repo_id, matching[0], force_download)
    reason = hub_unreachable_reason()
    where = (
        f"{reason}, so only files already in the Hugging Face cache can be used and they are not there: download "
        "them once online"
        if reason
        else "the hub does not list them: check the repo name"
    )
    raise FileNotFoundError(
        f"cannot find the Prisma weights {filename or ''} of {repo_id} (candidates: {candidates}). {where}, or load "
        "a local copy with sae_clip_plugin.pretrained.load_prisma_sae(path)."
    ) from first_error


def _optional_config(repo_id: str, force_download: bool) -> str | None:
    try:
        return _download(repo_id, "config.json", force_download)
    except EntryNotFoundError:  # older repos keep the config only inside the pickle
        return None


def _known_metadata(repo_id: str, raw_cfg: dict[str, Any]) -> dict[str, Any]:
    """Registry facts for a known repo; warns when the checkpoint's own config disagrees."""
    entry = _entries_by_repo().get(repo_id)
    if entry is None:
        return {}
    try:
        from_cfg = prisma_sae_config(raw_cfg, d_in=1, d_sae=1)["metadata"]
        claims = {"hook_name": from_cfg["hook_name"], "token_selection": from_cfg["token_selection"]}
    except (ValueError, KeyError, TypeError, NotImplementedError):
        claims = {}
    for key, value in claims.items():
        if value != getattr(entry, key):
            warnings.warn(
                f"{repo_id}: its config says {key}={value!r}, the release registry {getattr(entry, key)!r}; "
                "using the registry",
                stacklevel=3,
            )
    return {"hook_name": entry.hook_name, "token_selection": entry.token_selection, "model_name": MODEL_SPEC}


def prisma_huggingface_loader(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], None]:
    """sae_lens PretrainedSaeHuggingfaceLoader for Prisma repos (config.json + a pickled .pt)."""
    full_repo, filename = _locate(repo_id, folder_name)
    config_path = _optional_config(full_repo, force_download)
    weights_path = _weights_path(full_repo, filename, force_download)
    raw_cfg, state = read_prisma_checkpoint(weights_path, config_path, map_location=device)
    overrides = dict(cfg_overrides or {})
    dtype = str(overrides.pop("dtype", None) or "float32").removeprefix("torch.")
    known = _known_metadata(full_repo, raw_cfg)
    cfg_dict, state = convert_prisma(
        raw_cfg,
        state,
        device=device,
        dtype=dtype,
        extra_metadata={"repo_id": full_repo, "filename": Path(weights_path).name},
        **known,
    )
    return apply_overrides(cfg_dict, overrides), state, None


def prisma_config_from_hf(
    repo_id: str,
    folder_name: str,
    device: str | None = None,
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """sae_lens config getter: the cfg dict from config.json alone (no weights download)."""
    full_repo, _ = _locate(repo_id, folder_name)
    config_path = _optional_config(full_repo, force_download)
    if config_path is None:
        return prisma_huggingface_loader(
            repo_id, folder_name, device or "cpu", force_download, cfg_overrides
        )[0]

    with open(config_path) as f:
        raw_cfg = decode_prisma_value(json.load(f))
    cfg_dict = prisma_sae_config(
        raw_cfg,
        device=device or "cpu",
        extra_metadata={"repo_id": full_repo},
        **_known_metadata(full_repo, raw_cfg),
    )
    return apply_overrides(cfg_dict, cfg_overrides)


# ---------------------------------------------------------------- injection


def _wrap_directory(original: Any) -> Any:
    @functools.wraps(original)
    def get_pretrained_saes_directory() -> dict[str, Any]:
        directory = original()  # sae_lens' cached dict: adding to it persists until cache_clear()

        for release, lookup in {**_lookups(), **family_lookups()}.items():
            directory.setdefault(release, lookup)  # never shadow a release sae_lens ships itself
        return directory

    get_pretrained_saes_directory.cache_clear = original.cache_clear  # type: ignore[attr-defined]
    get_pretrained_saes_directory.cache_info = original.cache_info  # type: ignore[attr-defined]
    setattr(get_pretrained_saes_directory, _WRAPPER_FLAG, True)
    return get_pretrained_saes_directory


def register_pretrained_releases() -> None:
    """Make sae_lens' `SAE.from_pretrained` know the Prisma releases. Idempotent, no network, no yaml parse."""
    # here, not at module level: importing sae_lens runs our registration, which imports this module (cycle)
    from sae_lens.loading import pretrained_sae_loaders as loaders

    register_own_architecture("sae_clip_plugin.pretrained.tanh_relu", "register_tanh_relu")
    register_own_architecture("sae_clip_plugin.pretrained.prisma_transcoder", "register_prisma_transcoder")
    # here, not at module level: importing sae_lens runs our registration, which imports this module (cycle)
    from sae_lens.loading import pretrained_saes_directory as directory_module

    register_families()
    loaders.NAMED_PRETRAINED_SAE_LOADERS[CONVERSION_FUNC] = prisma_huggingface_loader
    loaders.NAMED_PRETRAINED_SAE_CONFIG_GETTERS[CONVERSION_FUNC] = prisma_config_from_hf
    current = directory_module.get_pretrained_saes_directory
    original = current.__wrapped__ if getattr(current, _WRAPPER_FLAG, False) else current
    wrapper = current if getattr(current, _WRAPPER_FLAG, False) else _wrap_directory(current)
    # sae_lens modules bound the function by name at import; modules imported later bind the wrapper.
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "sae_lens" or name.startswith("sae_lens.")):
            continue
        if getattr(module, "__dict__", {}).get("get_pretrained_saes_directory") is original:
            module.get_pretrained_saes_directory = wrapper
