"""A restricted unpickler for foreign SAE checkpoints (Prisma `.pt` files).

Why: Prisma checkpoints pickle a `vit_prisma` config object next to the weights, so
`torch.load(weights_only=True)` refuses them and plain `torch.load` would import vit_prisma
and run whatever the pickle names. Here only tensor/storage rebuilders, torch dtypes and
devices, and plain containers may be called; classes from the modules in
`STAND_IN_MODULE_PREFIXES` become inert stand-ins that just hold their pickled state; any
other global (os.system, builtins.eval, subprocess.Popen, ...) is refused before it runs.
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import pickle
import types
from pathlib import Path
from typing import Any

import torch

# Classes from these modules are never imported: they load as inert `StandIn` objects.
STAND_IN_MODULE_PREFIXES: tuple[str, ...] = (
    "vit_prisma",
    "sae_lens",
    "sae_training",
    "torch.nn.modules",  # e.g. an nn.ReLU() kept in activation_fn_kwargs
    "__main__",
)

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch.storage", "UntypedStorage"): torch.storage.UntypedStorage,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,  # only as copyreg._reconstructor's base
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("_codecs", "encode"): __import__("_codecs").encode,  # bytes under protocol 2
}
if hasattr(torch._utils, "_rebuild_tensor_v3"):
    _ALLOWED_GLOBALS[("torch._utils", "_rebuild_tensor_v3")] = torch._utils._rebuild_tensor_v3


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy scalars/arrays that a config may hold (e.g. an l1 coefficient as np.float64)."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    found: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 and 2 spellings
        for name in ("scalar", "_reconstruct"):
            found[(module, name)] = getattr(multiarray, name)
    return found


_ALLOWED_GLOBALS.update(_numpy_globals())


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside the allowlist; nothing it names was run."""


class StandIn:
    """Inert placeholder for a class that is not imported (e.g. a vit_prisma config).

    It accepts any constructor arguments and pickled state and only stores them, so
    `vars(obj)` gives the object's fields. Its type's `__module__`/`__qualname__` keep the
    original class's name for error messages.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            self.__dict__["_stand_in_args"] = args
        if kwargs:
            self.__dict__["_stand_in_kwargs"] = kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            for part in state:
                if isinstance(part, dict):
                    self.__dict__.update(part)
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_stand_in_state"] = state

    def __repr__(self) -> str:
        cls = type(self)
        return f"<StandIn {cls.__module__}.{cls.__qualname__} {sorted(self.__dict__)}>"


_STAND_IN_CLASSES: dict[tuple[str, str], type] = {}


def stand_in_class(module: str, name: str) -> type:
    """The (cached) inert stand-in class for `module.name`."""
    key = (module, name)
    if key not in _STAND_IN_CLASSES:
        safe_name = name.replace(".", "_") or "Anonymous"
        cls = types.new_class(safe_name, (StandIn,))
        cls.__module__ = module
        cls.__qualname__ = name
        _STAND_IN_CLASSES[key] = cls
    return _STAND_IN_CLASSES[key]


def _is_stand_in_module(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in STAND_IN_MODULE_PREFIXES)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose `find_class` only hands out allowlisted callables or stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol <= 2 pickles spell Python 3 names the Python 2 way (__builtin__, copy_reg)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if _is_stand_in_module(module):
            return stand_in_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle global '{module}.{name}': only tensors, storages, torch dtypes/devices, "
            f"plain containers and inert stand-ins for {', '.join(STAND_IN_MODULE_PREFIXES)} classes are "
            "allowed, and nothing was executed. If you trust this file, load it yourself with "
            "torch.load(path, weights_only=False) and pass the state dict to sae_clip_plugin.pretrained."
            "convert_prisma()."
        )


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# What torch.load(pickle_module=...) needs: `Unpickler` (subclassed by torch) and `load`.
restricted_pickle_module = types.SimpleNamespace(
    __name__="sae_clip_plugin.restricted_pickle", Unpickler=RestrictedUnpickler, load=_restricted_load
)


def restricted_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load through `RestrictedUnpickler`; raises UnsafePickleError on anything else."""
    try:
        return torch.load(
            Path(path), map_location=map_location, pickle_module=restricted_pickle_module, weights_only=False
        )
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except RuntimeError as err:
        if "explicit pickle_module" in str(err):
            raise RuntimeError(
                f"{err}. Unset TORCH_FORCE_WEIGHTS_ONLY_LOAD to load Prisma checkpoints with the restricted "
                "unpickler."
            ) from err
        raise


def to_plain(obj: Any) -> Any:
    """Stand-ins -> dicts, dtypes/devices -> strings, containers recursively; tensors kept."""
    if isinstance(obj, StandIn):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
