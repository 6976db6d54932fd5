"""Model specs: one string names a model everywhere (configs, SAE metadata, the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sae_clip_plugin import registry
from sae_clip_plugin.model.random_init import random_vision_model

if TYPE_CHECKING:  # the converters receive the class; importing it here would be a cycle
    from sae_clip_plugin.model.hooked_vit import HookedViT


RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class ModelSpec:
    """`open_clip:<name>[/<pretrained>]`, `hf:<repo id>`, or the name of a registered model (e.g. `toy`); any of
    them prefixed with `random:` names that model with a freshly initialised image tower (`random_vision_model`:
    the control of the paper's steerability measures; the text tower is kept)."""

    source: str
    name: str
    pretrained: str | None = None
    random: bool = False

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        if spec.startswith(RANDOM_PREFIX):
            inner = cls.parse(spec.removeprefix(RANDOM_PREFIX))
            if inner.random:
                raise ValueError(f"model spec {spec!r} says random: twice; once is enough")
            return replace(inner, random=True)
        if ":" not in spec and registry.find("model", spec) is not None:
            return cls("registered", spec)
        source, sep, rest = spec.partition(":")
        if not sep or not rest or source not in ("open_clip", "hf"):
            raise ValueError(
                f"unknown model spec {spec!r}; use 'open_clip:<model name>/<pretrained tag>' "
                "(e.g. 'open_clip:ViT-B-32/datacomp_xl_s13b_b90k'), 'hf:<repo id>' (e.g. "
                "'hf:openai/clip-vit-base-patch32') or a registered model name ("
                f"{', '.join(registry.names('model')) or 'none installed'})"
            )
        if source == "open_clip":
            name, _, pretrained = rest.partition("/")
            return cls(source, name, pretrained or None)
        return cls(source, rest)

    def __str__(self) -> str:
        prefix = RANDOM_PREFIX if self.random else ""
        if self.source == "registered":
            return prefix + self.name
        if self.source == "open_clip":
            return f"{prefix}open_clip:{self.name}" + (f"/{self.pretrained}" if self.pretrained else "")
        return f"{prefix}hf:{self.name}"


def load_model_from_spec(
    spec: str, model_cls: type[HookedViT], random_seed: int = 0, **kwargs: Any
) -> HookedViT:
    """`model_cls` (HookedViT or a subclass) from a model spec; HookedViT.from_pretrained calls this.

    random_seed: the seed of the image tower of a `random:` spec (ignored otherwise)."""
    parsed = ModelSpec.parse(spec)
    if parsed.random:
        trained = load_model_from_spec(str(replace(parsed, random=False)), model_cls, **kwargs)
        return random_vision_model(trained, seed=random_seed)
    if parsed.source == "registered":
        return registry.lookup("model", parsed.name)(model_cls, **kwargs)
    if parsed.source == "open_clip":
        return model_cls.from_open_clip(
            parsed.name, pretrained=parsed.pretrained, model_spec=str(parsed), **kwargs
        )
    return model_cls.from_hf(parsed.name, model_spec=str(parsed), **kwargs)
