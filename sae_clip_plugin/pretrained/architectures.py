"""Registering this package's own SAE architectures (tanh-ReLU, raw TopK) with sae_lens, once, from anywhere.

Why a helper: the registrations run when sae_lens is imported after this package, and an architecture module's
own `import sae_lens` can bring us back here while that module is half imported; it then registers itself.
"""

from __future__ import annotations

import importlib


def register_own_architecture(module: str, function: str) -> None:
    """Call `module.function()` (idempotent), unless `module` is still being imported (it registers itself)."""
    try:
        register = getattr(importlib.import_module(module), function, None)
    except ImportError:
        return
    if register is not None:
        register()
