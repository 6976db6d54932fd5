"""Register our pretrained releases and SAE classes with sae_lens once it is imported, however it is imported.

Why a post-import hook: `import sae_clip_plugin` must stay cheap (sae_lens pulls in transformer_lens and
torch), yet `import sae_clip_plugin; from sae_lens import SAE; SAE.from_pretrained(<our release>, ...)`
must work. If sae_lens is already loaded we register now; otherwise a meta-path finder runs the
registration right after sae_lens' own module has executed. Idempotent.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any


def _register() -> None:
    # lazy: torch (the registry); runs only once sae_lens is imported
    from sae_clip_plugin.pretrained.registry import register_pretrained_releases

    register_pretrained_releases()


class _RegisterAfterSaeLens(importlib.abc.MetaPathFinder):
    """Wraps the loader of `sae_lens` so our registration runs once its module body has run."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "sae_lens":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from finding us again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_with_sae_lens_on_import() -> None:
    if "sae_lens" in sys.modules:
        _register()
    elif not any(isinstance(f, _RegisterAfterSaeLens) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterSaeLens())
