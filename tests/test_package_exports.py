"""The main names are importable from the package top level, as sae_lens' are, and each is the object its module
defines (lazy exports resolve to the real thing)."""

from __future__ import annotations

import importlib

import sae_clip_plugin


def test_every_top_level_name_resolves_to_its_module_object():
    from sae_clip_plugin import _EXPORTS

    assert {"VisionSAERunnerConfig", "VisionSAETrainingRunner", "evaluate_sae", "steer", "steerability",
            "run_disentangle", "load_sae", "HookedViT", "TokenSelection"} <= set(sae_clip_plugin.__all__)  # fmt: skip
    for name, module in _EXPORTS.items():
        assert getattr(sae_clip_plugin, name) is getattr(importlib.import_module(module), name), name
