"""The toy world's zero-shot classes and prompt templates."""

from __future__ import annotations

from .model import TEMPLATES
from .world import SHAPES


def toy_classnames() -> list[str]:
    """The shape class names (zero-shot classes of the toy world)."""
    return list(SHAPES)


def toy_templates() -> list[str]:
    """Zero-shot prompt templates (the form used in the training captions)."""
    return list(TEMPLATES)
