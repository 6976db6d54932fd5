"""Model specs: one string names a model everywhere (configs, SAE metadata, the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sae_clip_plugin import registry

if TYPE_CHECKING:  # the converters receive the class; importing it here would be a cycle
    from sae_clip_plugin.model.hooked_vit import HookedViT


@dataclass(frozen=True)
class ModelSpec:
    """`open_clip:<name>[/<pretrained>]`, `hf:<repo id>`, or the name of a registered model (e.g. `toy`)."""

    source: str
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
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
        if self.source == "registered":
            return self.name
        if self.source == "open_clip":
            return f"open_clip:{self.name}" + (f"/{self.pretrained}" if self.pretrained else "")
        return f"hf:{self.name}"


def load_model_from_spec(spec: str, model_cls: type[HookedViT], **kwargs: Any) -> HookedViT:
    """`model_cls` (HookedViT or a subclass) from a model spec; HookedViT.from_pretrained calls this."""
    parsed = ModelSpec.parse(spec)
    if parsed.source == "registered":
        return registry.lookup("model", parsed.name)(model_cls, **kwargs)
    if parsed.source == "open_clip":
        return model_cls.from_open_clip(
            parsed.name, pretrained=parsed.pretrained, model_spec=str(parsed), **kwargs
        )
    return model_cls.from_hf(parsed.name, model_spec=str(parsed), **kwargs)
