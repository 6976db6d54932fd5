"""Image transforms, described as open_clip PreprocessCfg dicts so they serialise into configs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from open_clip.transform import PreprocessCfg, image_transform_v2


def preprocess_dict(**overrides: Any) -> dict[str, Any]:
    """open_clip's defaults (OpenAI mean/std, bicubic, shortest-side resize) with overrides."""
    known = {f.name for f in fields(PreprocessCfg)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; known keys are {sorted(known)}")
    cfg = asdict(PreprocessCfg(**overrides))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def build_transform(cfg: dict[str, Any]) -> Callable:
    """The eval transform open_clip would build for this config (resize, centre crop, normalise)."""
    values = preprocess_dict(**cfg)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return image_transform_v2(PreprocessCfg(**values), is_train=False)
