"""Where a training run writes its SAEs: checked before any work, locked while training, saved so nothing is lost.

Why: a run that trains for hours must not discover at the final rename that its output folder is on another file
system, read-only, full, or an existing file; two runs must not silently write the same folder; a kill during the
save must never leave a folder that loads one run's config with another's weights.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

TEMP_PREFIX = ".tmp-save-"  # temporary folders inside an output folder (hidden: never found as SAEs)


def check_output_location(targets: list[Path]) -> None:
    """Each target folder can be created and written (a probe file), else an error naming the folder and the fix."""
    for target in targets:
        for parent in (target, *target.parents):
            if parent.exists() and not parent.is_dir():
                raise NotADirectoryError(
                    f"output_path: {parent} is a file, not a folder; choose another output_path (--out)"
                )
            if parent.exists():
                break
        created = [p for p in (target, *target.parents) if not p.exists()]
        try:
            target.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX + "probe-", dir=target)
            try:
                os.write(fd, b"probe")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as err:
            raise OSError(
                f"output_path: cannot write into {target} ({err.strerror or err}); choose a writable output_path "
                "(--out) before training starts"
            ) from None
        finally:
            for folder in created:  # deepest first: the check leaves nothing behind
                with contextlib.suppress(OSError):
                    folder.rmdir()


def remove_stale_temporaries(targets: list[Path]) -> list[Path]:
    """Temporary folders a killed save left inside the targets (the caller holds the output lock)."""
    removed = []
    for target in targets:
        for leftover in target.glob(TEMP_PREFIX + "*") if target.is_dir() else ():
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(
                missing_ok=True
            )
            removed.append(leftover)
    return removed


def check_layout(output_path: Path, hook_names: list[str], own_files: tuple[str, ...]) -> None:
    """One SAE at the root (one hook) and SAEs in per-hook folders (several) never share an output folder.

    Why: after training one hook into a folder, training two hooks into it wrote `<out>/<hook>/` beside the old
    root SAE, and `--sae <out>` then found only the old one.
    """
    root_holds_sae = any((output_path / name).exists() for name in own_files)
    sub_saes = sorted(
        p.parent.name for p in output_path.glob("*/cfg.json") if not p.parent.name.startswith(".")
    ) if output_path.is_dir() else []  # fmt: skip
    if len(hook_names) > 1 and root_holds_sae:
        raise FileExistsError(
            f"output_path {output_path} holds a single-hook SAE, and {len(hook_names)} hooks would be saved beside it in "
            "per-hook folders, where loading the folder finds only the old one; choose another output_path (--out) "
            "or move the old SAE away"
        )
    if len(hook_names) == 1 and sub_saes:
        raise FileExistsError(
            f"output_path {output_path} holds per-hook SAE folders ({', '.join(sub_saes[:3])}); a single-hook SAE saved at "
            "its root would hide them; choose another output_path (--out)"
        )


def rescue_weights(state: dict, cfg_json: str, name: str, places: list[Path | None]) -> Path | None:
    """After a failed final save: the trained weights in the first place that takes them (else None)."""
    from safetensors.torch import save_file  # lazy: torch

    for place in [*places, Path(tempfile.gettempdir())]:
        if place is None:
            continue
        folder = Path(place) / f"rescued-{name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in state.items()},
                str(folder / "sae_weights.safetensors"),
            )
            (folder / "cfg.json").write_text(cfg_json, encoding="utf-8")
            return folder
        except OSError:
            continue
    return None
