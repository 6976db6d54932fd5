"""Model specs: one string names a model everywhere (configs, SAE metadata, the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sae_clip_plugin.model.hooked_vit import HookedViT

TOY_SPEC = "toy"


@dataclass(frozen=True)
class ModelSpec:
    """`open_clip:<name>[/<pretrained>]`, `hf:<repo id>` or `toy`."""

    source: str
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        if spec == TOY_SPEC:
            return cls("toy", TOY_SPEC)
        source, sep, rest = spec.partition(":")
        if not sep or not rest or source not in ("open_clip", "hf"):
            raise ValueError(
                f"unknown model spec {spec!r}; use 'open_clip:<model name>/<pretrained tag>' "
                "(e.g. 'open_clip:ViT-B-32/datacomp_xl_s13b_b90k'), 'hf:<repo id>' (e.g. "
                "'hf:openai/clip-vit-base-patch32') or 'toy'"
            )
        if source == "open_clip":
            name, _, pretrained = rest.partition("/")
            return cls(source, name, pretrained or None)
        return cls(source, rest)

    def __str__(self) -> str:
        if self.source == "toy":
            return TOY_SPEC
        if self.source == "open_clip":
            return f"open_clip:{self.name}" + (f"/{self.pretrained}" if self.pretrained else "")
        return f"hf:{self.name}"


def load_model_from_spec(spec: str, model_cls: type[HookedViT] = HookedViT, **kwargs: Any) -> HookedViT:
    parsed = ModelSpec.parse(spec)
    if parsed.source == "toy":
        from sae_clip_plugin.toy import load_toy_clip

        clip, preprocess, tokenizer = load_toy_clip()
        model = model_cls.from_open_clip(clip, tokenizer=tokenizer, model_spec=TOY_SPEC, **kwargs)
        model._preprocess = preprocess
        return model
    if parsed.source == "open_clip":
        return model_cls.from_open_clip(
            parsed.name, pretrained=parsed.pretrained, model_spec=str(parsed), **kwargs
        )
    return model_cls.from_hf(parsed.name, model_spec=str(parsed), **kwargs)
