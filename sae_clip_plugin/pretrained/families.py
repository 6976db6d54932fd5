"""The third-party vision-SAE families as sae_lens releases and as local files (docs/pretrained_families.md).

| release | sae_id | hub repo / path |
| --- | --- | --- |
| `saev-clip-vit-b-16-in1k-24k` | `blocks.10.hook_resid_post` | `osunlp/SAE_CLIP_24K_ViT-B-16_IN1K` / `sae.pt` |
| `visaebench-clip-vit-b-16` | `blocks.11.hook_resid_post/batchtopk_{8,16,32}x_k{64,128,192,256}` | `visaebench/clip-vitb16-saes` / `<config>/` |
| `clipscope-clip-vit-l-14-laion2b` | `blocks.{2,5,...,22}.hook_resid_post` | `lewington/CLIP-ViT-L-scope` / `<L>_resid/<count>.pt` |

dictionary_learning (sae-for-vlm) has no known hub release: load a repo with
`SAE.from_pretrained("<org>/<repo>", "trainer_0", converter=dictionary_learning_huggingface_loader)`, or local
files with `load_sae(folder)`. Each family's loader is registered in sae_lens' NAMED_PRETRAINED_SAE_LOADERS under
its conversion name; registry.py adds the lookups to sae_lens' directory wrapper.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType
from typing import Any

from sae_clip_plugin.pretrained import clipscope, dictionary_learning, saev, visaebench
from sae_clip_plugin.pretrained.architectures import register_own_architecture
from sae_clip_plugin.pretrained.family_base import FamilyEntry, ModelFacts, finish, fold_norm_stats

FAMILIES: dict[str, ModuleType] = {
    "saev": saev,
    "dictionary_learning": dictionary_learning,
    "visaebench": visaebench,
    "clipscope": clipscope,
}
# families whose files may need normalisation statistics folded in
NORM_STATS_FAMILIES = ("saev", "visaebench")
_MODELS = {
    m.spec: m for m in (saev.MODEL, visaebench.MODEL, clipscope.MODEL, dictionary_learning.SAE_FOR_VLM_MODEL)
}

__all__ = ["fold_norm_stats", "load_family_sae"]


@functools.cache
def family_entries() -> tuple[FamilyEntry, ...]:
    return tuple(e for module in FAMILIES.values() if hasattr(module, "entries") for e in module.entries())


@functools.cache
def _by_location() -> dict[tuple[str, str], FamilyEntry]:
    return {(e.repo_id, e.path): e for e in family_entries()}


def family_rows() -> list[dict[str, Any]]:
    """list_pretrained rows (the Prisma rows' keys, plus d_sae)."""
    return [
        {
            "release": e.release, "sae_id": e.sae_id, "repo_id": e.repo_id, "filename": e.path, "model": e.model,
            "hook_name": e.hook_name, "layer": int(e.hook_name.split(".")[1]), "family": e.family,
            "token_selection": e.token_selection, "architecture": e.architecture, "l1_coefficient": None, "k": e.k,
            "d_sae": e.d_sae,
        }
        for e in family_entries()
    ]  # fmt: skip


@functools.cache
def family_lookups() -> dict[str, Any]:
    # here, not at module level: importing sae_lens runs our registration, which imports this module (cycle)
    from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

    by_release: dict[str, list[FamilyEntry]] = {}
    for e in family_entries():
        by_release.setdefault(e.release, []).append(e)
    return {
        release: PretrainedSAELookup(
            release=release, repo_id=entries[0].repo_id, model=entries[0].model,
            conversion_func=entries[0].conversion_func, saes_map={e.sae_id: e.path for e in entries},
            expected_var_explained={e.sae_id: 1.0 for e in entries}, expected_l0={e.sae_id: 0.0 for e in entries},
            neuronpedia_id={e.sae_id: None for e in entries}, norm_scaling_factor={}, config_overrides=None,
        )
        for release, entries in by_release.items()
    }  # fmt: skip


def _facts(entry: FamilyEntry | None, repo_id: str, path: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"source": {"repo_id": repo_id, "filename": path}}
    if entry is not None:
        facts.update(
            hook_name=entry.hook_name, token_selection=entry.token_selection, model=_MODELS[entry.model]
        )
    return facts


def _hf_loader(name: str) -> Any:
    module = FAMILIES[name]

    def loader(
        repo_id: str,
        folder_name: str,
        device: str = "cpu",
        force_download: bool = False,
        cfg_overrides: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], None]:
        local = module.hub_path(repo_id, folder_name, force_download)
        facts = _facts(_by_location().get((repo_id, folder_name)), repo_id, folder_name)
        if name == "clipscope" and "model" not in facts:  # one model only
            facts["model"] = clipscope.MODEL
        cfg, state = module.read(local, **facts)
        return (*finish(cfg, state, {"device": device, **(cfg_overrides or {})}), None)

    loader.__name__ = loader.__qualname__ = f"{name}_huggingface_loader"
    loader.__doc__ = f"sae_lens PretrainedSaeHuggingfaceLoader for {name} files (see {module.__name__})."
    return loader


saev_huggingface_loader = _hf_loader("saev")
dictionary_learning_huggingface_loader = _hf_loader("dictionary_learning")
visaebench_huggingface_loader = _hf_loader("visaebench")
clipscope_huggingface_loader = _hf_loader("clipscope")
HF_LOADERS = {
    saev.CONVERSION_FUNC: saev_huggingface_loader,
    dictionary_learning.CONVERSION_FUNC: dictionary_learning_huggingface_loader,
    visaebench.CONVERSION_FUNC: visaebench_huggingface_loader,
    clipscope.CONVERSION_FUNC: clipscope_huggingface_loader,
}


def _config_getter(loader: Any) -> Any:
    def get_config(
        repo_id: str, folder_name: str, device: str | None = None, force_download: bool = False,
        cfg_overrides: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        return loader(repo_id, folder_name, device or "cpu", force_download, cfg_overrides)[0]

    return get_config


def register_families() -> None:
    """Family loaders into sae_lens' named loaders, and the raw-TopK architecture (idempotent)."""
    # here, not at module level: importing sae_lens runs our registration, which imports this module (cycle)
    from sae_lens.loading import pretrained_sae_loaders as loaders

    register_own_architecture("sae_clip_plugin.pretrained.raw_topk", "register_raw_topk")
    for name, loader in HF_LOADERS.items():
        loaders.NAMED_PRETRAINED_SAE_LOADERS[name] = loader
        loaders.NAMED_PRETRAINED_SAE_CONFIG_GETTERS[name] = _config_getter(loader)


def detect_family(path: str | Path) -> str | None:
    """The family whose local files `path` (a file or a folder) holds, else None (e.g. Prisma or sae_lens)."""
    path = Path(path)
    if path.is_dir() and (path / "cfg.json").is_file():
        return None  # a sae_lens folder
    for name in ("saev", "dictionary_learning", "visaebench", "clipscope"):
        if FAMILIES[name].sniff(path):
            return name
    return None


def load_family_sae(
    path: str | Path,
    family: str | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    norm_stats: Any = None,
    hook_name: str | None = None,
    model_name: str | None = None,
    token_selection: str | None = None,
    **family_options: Any,
) -> Any:
    """A local family file or folder as a sae_lens SAE (eval mode).

    family: "saev" / "dictionary_learning" / "visaebench" / "clipscope" (default: detected from the files).
    norm_stats (saev, visaebench): {"mean": tensor[d_in], "std": float or tensor[d_in]} or a file holding it,
    folded exactly into the weights so the SAE takes raw activations. hook_name / model_name / token_selection
    fill in what the files do not say (model_name: one of the families' model specs, for its geometry).
    family_options: saev's legacy_b_dec.
    """
    # here, not at module level: importing sae_lens (raw_topk does too) runs our registration, which imports
    # this module (cycle)
    from sae_lens import SAE

    from sae_clip_plugin.pretrained.raw_topk import register_raw_topk

    register_raw_topk()
    path = Path(path)
    family = family or detect_family(path)
    if family not in FAMILIES:
        raise ValueError(f"{path}: not a file of a known family ({sorted(FAMILIES)}); pass family=...")
    if norm_stats is not None and family not in NORM_STATS_FAMILIES:
        raise ValueError(
            f"{family} files need no normalisation statistics (norm_stats is for {NORM_STATS_FAMILIES})"
        )
    facts: dict[str, Any] = dict(family_options)
    if norm_stats is not None:
        facts["norm_stats"] = norm_stats
    if model_name is not None:
        if model_name not in _MODELS:
            raise ValueError(f"model_name {model_name!r} is none of the families' models {sorted(_MODELS)}")
        facts["model"] = _MODELS[model_name]
    elif family == "clipscope":  # the other families' files serve several models and do not name theirs
        facts["model"] = clipscope.MODEL
    facts.update({k: v for k, v in (("hook_name", hook_name), ("token_selection", token_selection)) if v})

    def converter(p: Any, device: str, cfg_overrides: dict[str, Any] | None = None) -> Any:
        cfg, state = FAMILIES[family].read(p, **facts)
        return finish(cfg, state, {"device": device, **(cfg_overrides or {})})

    return SAE.load_from_disk(path, device=device, dtype=dtype, converter=converter).eval()


def model_facts(spec: str) -> ModelFacts | None:
    return _MODELS.get(spec)
