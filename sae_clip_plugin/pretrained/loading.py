"""One resolver for every way a user names an SAE: a sae_lens folder, a folder of them, a Prisma `.pt` (or its
folder), or a `RELEASE:SAE_ID` pretrained name. Every command and API takes SAEs through it, so they all accept
the same things and a broken folder is named with its fix before any work starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

SAE_CONFIG_FILE = "cfg.json"
SAE_WEIGHTS_FILE = "sae_weights.safetensors"


def find_sae_folders(root: str | os.PathLike) -> list[Path]:
    """`root` itself if it is an SAE folder (has cfg.json), else its SAE sub-folders (any depth), sorted."""
    root = Path(root)
    if (root / SAE_CONFIG_FILE).is_file():
        return [root]
    found = sorted(
        {
            p.parent
            for p in root.rglob(SAE_CONFIG_FILE)
            if (p.parent / SAE_WEIGHTS_FILE).exists()
            # hidden folders (.tmp-* of an interrupted save, .cache, ...) are never SAEs to evaluate
            and not any(part.startswith(".") for part in p.parent.relative_to(root).parts)
        }
    )
    if not found:
        raise FileNotFoundError(
            f"no SAE folders under {root}: expected folders with {SAE_CONFIG_FILE} + {SAE_WEIGHTS_FILE} "
            "(sae_lens format, as save_sae / the training runner write them)"
        )
    return found


def check_sae_folder(folder: Path) -> None:
    """A readable cfg.json and a weights file, else a message naming the file and the fix."""
    cfg = folder / SAE_CONFIG_FILE
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(
            f"{cfg} is not valid JSON ({err}); restore it from the training run or re-save the SAE"
        ) from None
    if not (folder / SAE_WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} has {SAE_CONFIG_FILE} but no {SAE_WEIGHTS_FILE}: the save was interrupted or the file was "
            "removed; re-run the training (it resumes from its checkpoints) or copy the weights back"
        )


def _is_pretrained_name(spec: str) -> bool:
    return ":" in spec and not Path(spec).exists() and not (len(spec) > 1 and spec[1] == ":")  # not C:\...


def load_saes(spec: Any, device: str = "cpu", **family_kwargs: Any) -> list[tuple[str, Any]]:
    """(where, SAE) for every SAE `spec` names: an SAE, a folder, a folder of folders, a .pt, or RELEASE:SAE_ID.

    Files of the third-party families (saev, dictionary_learning, visaebench, CLIP-Scope) are recognised;
    family_kwargs (norm_stats, hook_name, model_name, ...) go to `families.load_family_sae` for them.
    """
    from sae_lens import SAE  # lazy: sae_lens (the folder checks here need no torch)

    if isinstance(spec, SAE):
        return [(str(spec.cfg.metadata.get("hook_name")), spec)]
    spec = str(spec)
    if _is_pretrained_name(spec):
        release, _, sae_id = spec.partition(":")
        return [(spec, _checked(SAE.from_pretrained(release, sae_id, device=device), spec))]
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"SAE {spec!r} not found: pass a sae_lens SAE folder, a folder of them, a Prisma .pt file, or "
            "RELEASE:SAE_ID (see sae_clip_plugin.list_pretrained())"
        )
    from sae_clip_plugin.pretrained.families import detect_family, load_family_sae  # lazy: torch

    family = family_kwargs.pop("family", None) or detect_family(path)
    if family is not None:
        return [
            (spec, load_family_sae(path, family, device=device, **family_kwargs))
        ]  # checked by the converter
    if family_kwargs:
        raise ValueError(
            f"{spec}: {sorted(family_kwargs)} apply to saev / dictionary_learning / visaebench / CLIP-Scope files only"
        )
    if path.suffix in (".pt", ".pth") or (
        path.is_dir() and not (path / SAE_CONFIG_FILE).exists() and any(path.glob("*.pt"))
    ):
        from sae_clip_plugin.pretrained.prisma import load_prisma_sae  # lazy: torch

        return [(spec, load_prisma_sae(path, device=device))]  # checked by the converter
    loaded = []
    for folder in find_sae_folders(path):
        check_sae_folder(folder)
        loaded.append((str(folder), _checked(_load_folder(SAE, folder, device), str(folder))))
    return loaded


def _load_folder(sae_class: Any, folder: Path, device: str) -> Any:
    """SAE.load_from_disk, with a damaged weights file named (safetensors says only 'invalid header')."""
    try:
        return sae_class.load_from_disk(str(folder), device=device)
    except SafetensorError as err:
        raise ValueError(
            f"{folder / SAE_WEIGHTS_FILE} is damaged ({err}); restore it from the training run or a checkpoint, "
            "or re-save the SAE"
        ) from None


def _checked(sae: Any, source: str) -> Any:
    from sae_clip_plugin.pretrained.checks import check_loaded_sae  # lazy: torch

    check_loaded_sae(sae, source)
    return sae


def load_sae(spec: Any, device: str = "cpu", **family_kwargs: Any) -> Any:
    """The one SAE `spec` names (see `load_saes`), in eval mode; several found is an error."""
    found = load_saes(spec, device, **family_kwargs)
    if len(found) != 1:
        raise ValueError(
            f"{spec!r} holds {len(found)} SAEs ({', '.join(w for w, _ in found[:4])}...); name one SAE folder"
        )
    return found[0][1].eval()


def load_saes_by_hook(specs: Sequence[Any], device: str = "cpu") -> dict[str, Any]:
    """hook name -> SAE (eval mode) for every SAE the `specs` name (one SAE per hook, e.g. one per layer)."""
    saes: dict[str, Any] = {}
    for where, sae in (found for spec in specs for found in load_saes(spec, device)):
        hook = sae.cfg.metadata.hook_name
        if not hook:
            raise ValueError(f"the SAE at {where} has no metadata.hook_name; cannot tell which hook it reads")
        if hook in saes:
            raise ValueError(f"two SAEs for {hook} ({where} and another); pass one SAE per hook")
        saes[hook] = sae.eval()
    if not saes:
        raise ValueError(
            "no SAEs given: pass --sae FOLDER (an SAE, or a folder of them) or --sae RELEASE:SAE_ID"
        )
    return saes


def sae_metadata(spec: Any, device: str = "cpu") -> Any:
    """An SAE's metadata (supports `.get`): a sae_lens folder's is read from its cfg.json without loading the weights;
    anything else `load_sae` accepts is loaded."""
    config = Path(str(spec)) / SAE_CONFIG_FILE
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("metadata") or {}
    return load_sae(spec, device).cfg.metadata


def model_spec_from_metadata(metadata: Iterable[Any], default: str | None = None) -> str:
    """The model spec the SAEs' metadata names (they must agree), else `default`; an error naming --model."""
    specs = {meta.get("model_name") for meta in metadata} - {None, ""}
    if len(specs) == 1:
        return specs.pop()
    if default:
        return default
    raise ValueError(
        f"cannot tell which model to load (the SAEs' metadata model_name: {sorted(specs) or 'none'}); "
        "pass --model SPEC"
    )
