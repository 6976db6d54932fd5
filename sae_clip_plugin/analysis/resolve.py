"""One resolver for what every command is given: --model, --sae, --hook, --images, --device -> loaded objects.

`sae-clip eval`, `steerability`, `disentangle`, `decompose` and the demo call `resolve_run`, so the rules are one:
the model is the one named, else the one model the SAEs' metadata names, else the model of the world whose images or
tasks were named (the toy world's `toy`); `random:<spec>` is that model with a fresh image tower; the hook is the
one named, else the SAE's; the images are the ones named, else the model's own registered images. Every problem is
a ValueError whose message names the flag that fixes it (the CLI prints it as one line, exit status 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_clip_plugin import registry
from sae_clip_plugin.model.device import resolve_device
from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT
from sae_clip_plugin.model.sae_splice import check_saes_fit
from sae_clip_plugin.model.specs import RANDOM_PREFIX
from sae_clip_plugin.pretrained.loading import (
    SAE_CONFIG_FILE,
    find_sae_folders,
    load_sae,
    load_saes_by_hook,
    model_spec_from_metadata,
    sae_metadata,
)


@dataclass
class ResolvedRun:
    """The loaded inputs of one run."""

    model: HookedSAEViT
    model_spec: str
    device: str
    saes: dict[str, Any] = field(default_factory=dict)  # hook -> SAE (eval mode), when loaded
    sae_sources: dict[str, Any] = field(default_factory=dict)  # name -> folder or spec, when not loaded
    hook: str | None = None
    images: str | None = None

    @property
    def sae(self) -> Any:
        """The one SAE of a run given one (None for none)."""
        if len(self.saes) > 1:
            raise ValueError(
                f"this command takes one SAE, got {len(self.saes)} ({', '.join(self.saes)}); pass one --sae"
            )
        return next(iter(self.saes.values()), None)


def sae_sources(specs: Sequence[Any]) -> dict[str, Any]:
    """name -> what to load, for SAEs evaluated one at a time: every SAE folder under a folder (named by its path
    inside it), a Prisma .pt or RELEASE:SAE_ID as given."""
    found: dict[str, Any] = {}
    for given in specs:
        root = Path(str(given))
        if root.is_dir() and any(root.rglob(SAE_CONFIG_FILE)):
            for folder in find_sae_folders(root):
                found[str(folder.relative_to(root)) if folder != root else folder.name] = folder
        else:
            found[str(given)] = given
    return found


def resolve_run(
    model: str | None = None,
    sae: Sequence[Any] | str | None = None,
    hook: str | None = None,
    images: str | None = None,
    device: str = "auto",
    *,
    world: tuple[str, Sequence[str]] | None = None,
    load_saes: bool = True,
    check_model: bool = True,
    random_model: bool = False,
    random_seed: int = 0,
    need_hook: str | None = None,
    need_images: str | None = None,
) -> ResolvedRun:
    """Load what a command was given (see the module docstring for the rules).

    world: (kind, names) of registered things the run uses (e.g. ("task", ["toy-typographic"])): their world's
        model is the default when neither --model nor the SAEs name one.
    load_saes: False keeps SAE folders as paths (`sae_sources`), for commands that load them one at a time.
    random_model: the model with a freshly initialised image tower (`random:<spec>`, seed `random_seed`), the SAEs
        applied to it as they are (the control of the paper's steerability measures).
    need_hook / need_images: when given and nothing names the hook / images, a ValueError with this text.
    """
    resolved_device = resolve_device(device)
    specs = [sae] if isinstance(sae, str) else list(sae or [])
    saes: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    if load_saes and specs:
        saes = (
            load_saes_by_hook(specs, resolved_device)
            if len(specs) > 1
            else _one_or_many(specs[0], resolved_device)
        )
        metadata = [s.cfg.metadata for s in saes.values()]
    else:
        sources = sae_sources(specs)
        metadata = [sae_metadata(s, resolved_device) for s in sources.values()]
    default = registry.world_model(*world) if world else None
    if default is None and images:
        default = registry.world_model("eval_images", [images]) or registry.world_model("images", [images])
    if model:
        spec = model
    elif metadata:
        spec = model_spec_from_metadata(metadata, default=default)
    elif default:
        spec = default
    else:
        raise ValueError(
            "cannot tell which model to load: pass --model SPEC (or --sae, whose metadata names one)"
        )
    if random_model and not spec.startswith(RANDOM_PREFIX):
        spec = RANDOM_PREFIX + spec
    loaded = HookedSAEViT.from_pretrained(spec, device=resolved_device, random_seed=random_seed).eval()
    if saes:  # the control applies the trained model's SAEs to its random twin on purpose
        check_saes_fit(loaded, saes, check_model and not random_model)
    chosen_hook = hook or (next(iter(saes)) if len(saes) == 1 else None)
    if chosen_hook is None and need_hook:
        raise ValueError(need_hook)
    if chosen_hook is not None:
        loaded.check_hook_names([chosen_hook])
    trained_spec = spec.removeprefix(RANDOM_PREFIX)
    chosen_images = images or (trained_spec if registry.find("images", trained_spec) else None)
    if chosen_images is None and need_images:
        raise ValueError(need_images)
    return ResolvedRun(loaded, spec, resolved_device, saes, sources, chosen_hook, chosen_images)


def _one_or_many(spec: Any, device: str) -> dict[str, Any]:
    """One --sae: a single SAE (any format load_sae reads) or a folder of SAE folders, by hook."""
    root = Path(str(spec))
    if root.is_dir() and not (root / SAE_CONFIG_FILE).is_file() and any(root.rglob(SAE_CONFIG_FILE)):
        return load_saes_by_hook([spec], device)
    sae = load_sae(spec, device).eval()
    hook = sae.cfg.metadata.hook_name
    if not hook:
        raise ValueError(f"the SAE at {spec} has no metadata.hook_name; cannot tell which hook it reads")
    return {hook: sae}
