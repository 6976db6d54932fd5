"""Names that worlds contribute: model specs, image sources, vocabularies, text banks, evaluation images, tasks.

Why: the library looks these names up here instead of importing a world. A world (the bundled toy CLIP world, or a
synthetic world of your own) registers its factories from a `register()` function that its distribution declares
under the entry-point group `sae_clip_plugin.worlds`; the entry points load on the first lookup that misses.
Registering by hand works too:

    from sae_clip_plugin import registry
    registry.register("vocabulary", "my-words", lambda: ["cat", "dog"])

Kinds and the factory each one takes:

- "model": `factory(model_cls, **build_kwargs) -> HookedViT`; the name is then a model spec (`--model NAME`).
- "images": `factory(n_images, seed) -> torch Dataset of images`; a dataset / `--images` name.
- "vocabulary": `factory() -> list[str]`; a steerability readout vocabulary name.
- "text_bank": `factory() -> list[str]`; TextSpan's texts for `sae-clip decompose --texts NAME`.
- "eval_images": `factory(n, seed) -> (labelled dataset, classnames, templates)`; `sae-clip eval --images NAME`.
- "task": `factory(model, n_select, n_eval, seed, **options) -> SpuriousTask`; `sae-clip disentangle --task NAME`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "sae_clip_plugin.worlds"
KINDS = ("model", "images", "vocabulary", "text_bank", "eval_images", "task")

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
_worlds_loaded = False
_world_of: dict[tuple[str, str], str] = {}  # (kind, name) -> the entry point (world) that registered it
_registering: str | None = None  # the world whose register() is running


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; choose one of {KINDS}")


def register(kind: str, name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Make `name` mean `factory` for `kind` (idempotent for the same factory)."""
    _check_kind(kind)
    known = _REGISTRY[kind].get(name)
    if known is not None and known is not factory and not overwrite:
        raise ValueError(f"{kind} {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[kind][name] = factory
    if _registering is not None:
        _world_of[(kind, name)] = _registering


def load_worlds() -> None:
    """Run the `register()` of every installed world, once per process (the entry points are read once: a miss
    such as an image folder's path then costs a dict lookup)."""
    global _worlds_loaded, _registering
    if _worlds_loaded:
        return
    _worlds_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _registering = entry.name
        try:
            entry.load()()
        finally:
            _registering = None


def names(kind: str) -> list[str]:
    """Every registered name of `kind` (installed worlds included)."""
    _check_kind(kind)
    load_worlds()
    return sorted(_REGISTRY[kind])


def find(kind: str, name: str) -> Callable[..., Any] | None:
    """The factory registered as `name` for `kind`, or None."""
    _check_kind(kind)
    if name not in _REGISTRY[kind]:
        load_worlds()
    return _REGISTRY[kind].get(name)


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as `name` for `kind`; a clear error that lists the known names otherwise."""
    factory = find(kind, name)
    if factory is None:
        known = ", ".join(names(kind)) or "none"
        raise ValueError(
            f"no {kind} named {name!r} is registered (known: {known}); a world registers its names from the "
            f"entry-point group {ENTRY_POINT_GROUP!r} (reinstall the package that provides it, e.g. "
            "`pip install -e .` for the bundled toy world) or call sae_clip_plugin.registry.register"
        )
    return factory


def world_model(kind: str, names: list[str]) -> str | None:
    """The model registered by the one world that registered all `names` of `kind` (e.g. the toy world's tasks ->
    "toy"), when that world registered exactly one model; else None."""
    load_worlds()
    worlds = {_world_of.get((kind, name)) for name in names}
    if len(worlds) != 1 or None in worlds:
        return None
    world = worlds.pop()
    models = [name for (k, name), w in _world_of.items() if k == "model" and w == world]
    return models[0] if len(models) == 1 else None
