"""The toy CLIP world: a synthetic image-caption world with planted concepts and a small CLIP trained on it.

Entry points: :func:`load_toy_clip` (bundled weights), the dataset helpers, :func:`train_toy_clip`
(the recipe that produced the weights) and :func:`evaluate_toy_clip` (the must-show numbers).
"""

from __future__ import annotations

from .datasets import (
    ToyDataset,
    background_spurious_set,
    colour_spurious_set,
    train_dataset,
    typographic_set,
)
from .evaluate import evaluate_toy_clip, format_report
from .model import (
    MODEL_NAME,
    TEMPLATES,
    WEIGHTS_PATH,
    create_toy_clip,
    load_toy_clip,
    register_toy_config,
    toy_preprocess,
    toy_tokenizer,
)
from .sampling import WorldConfig, train_sample
from .train import train_toy_clip
from .world import BACKGROUNDS, COLOURS, SHAPES, ToySample, render


def toy_classnames() -> list[str]:
    """The shape class names (zero-shot classes of the toy world)."""
    return list(SHAPES)


def toy_templates() -> list[str]:
    """Zero-shot prompt templates (the form used in the training captions)."""
    return list(TEMPLATES)


register_toy_config()

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "MODEL_NAME",
    "SHAPES",
    "TEMPLATES",
    "WEIGHTS_PATH",
    "ToyDataset",
    "ToySample",
    "WorldConfig",
    "background_spurious_set",
    "colour_spurious_set",
    "create_toy_clip",
    "evaluate_toy_clip",
    "format_report",
    "load_toy_clip",
    "register_toy_config",
    "render",
    "toy_classnames",
    "toy_preprocess",
    "toy_templates",
    "toy_tokenizer",
    "train_dataset",
    "train_sample",
    "train_toy_clip",
    "typographic_set",
]
