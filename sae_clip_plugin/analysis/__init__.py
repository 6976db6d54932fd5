"""Analysis of vision SAEs: metrics, zero-shot evaluation, steering, steerability, disentanglement.

Import the modules directly (`from sae_clip_plugin.analysis.metrics import evaluate_sae`); the
names below are also reachable here, loaded on first use so that importing the package stays cheap
and no module pulls in another's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "evaluate_sae": "sae_clip_plugin.analysis.metrics",
    "evaluate_saes": "sae_clip_plugin.analysis.metrics",
    "evaluate_zero_shot": "sae_clip_plugin.analysis.zero_shot",
    "iter_image_batches": "sae_clip_plugin.analysis.zero_shot",
    "zero_shot_logits": "sae_clip_plugin.analysis.zero_shot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
