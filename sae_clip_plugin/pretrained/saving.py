"""Save and upload our SAEs in sae_lens' own format (cfg.json + sae_weights.safetensors).

Thin wrappers over `SAE.save_model` and `sae_lens.upload_saes_to_huggingface`. Why wrap: a cfg
without `metadata.sae_lens_version` is read back as pre-6 (hook_name and our vision metadata come
back None), metadata must be JSON-serialisable, and the folder should appear atomically.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sae_clip_plugin.atomic import make_temp_dir, replace_files

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _ensure_version(sae: Any) -> None:
    import sae_lens  # lazy: sae_lens

    if not getattr(sae.cfg.metadata, "sae_lens_version", None):
        sae.cfg.metadata.sae_lens_version = sae_lens.__version__


def save_sae(sae: Any, path: str | Path, overwrite: bool = False) -> Path:
    """Write `sae` as a sae_lens folder at `path` (atomically), with metadata.sae_lens_version set."""
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace the SAE files in it")
    _ensure_version(sae)
    try:
        json.dumps(sae.cfg.to_dict())
    except TypeError as err:
        raise TypeError(
            f"SAE config/metadata is not JSON-serialisable ({err}); store plain values in metadata"
        ) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, prefix=f".tmp-{path.name}-")
    try:
        sae.save_model(tmp)
        replace_files(tmp, path)  # the SAE's own files, one atomic rename each; anything else in `path` stays
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def upload_sae(
    sae_or_path: Any,
    repo_id: str,
    sae_id: str | None = None,
    revision: str = "main",
    add_default_readme: bool = True,
) -> str:
    """Upload one SAE (object or sae_lens folder) to `repo_id/<sae_id>` with sae_lens' upload helper.

    sae_id defaults to the SAE's hook name, so it loads back with
    `SAE.from_pretrained(repo_id, sae_id)`. Needs a Hugging Face token with write access
    (`huggingface-cli login` or HF_TOKEN). Returns sae_id.
    """
    # lazy: sae_lens; looked up per call, so a patched sae_lens.upload_saes_to_huggingface is used
    from sae_lens import SAE, upload_saes_to_huggingface

    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(sae_or_path, SAE):
            folder = save_sae(sae_or_path, Path(tmp) / "sae")
        else:
            folder = Path(sae_or_path)
            if not (folder / "cfg.json").is_file() or not (folder / "sae_weights.safetensors").is_file():
                raise FileNotFoundError(
                    f"{folder} is not a sae_lens SAE folder (cfg.json + sae_weights.safetensors)"
                )
            sae = SAE.load_from_disk(folder)
            if not sae.cfg.metadata.get("sae_lens_version"):  # re-save so it reads back as sae_lens >= 6
                folder = save_sae(sae, Path(tmp) / "sae")
        sae_id = sae_id or json.loads((folder / "cfg.json").read_text()).get("metadata", {}).get("hook_name")
        if not sae_id or sae_id.startswith("/") or ".." in sae_id.split("/"):
            raise ValueError(f"need a relative sae_id (folder in the repo), got {sae_id!r}; pass sae_id=...")
        upload_saes_to_huggingface({sae_id: folder}, hf_repo_id=repo_id, hf_revision=revision,
                                   add_default_readme=add_default_readme)  # fmt: skip
    return sae_id
