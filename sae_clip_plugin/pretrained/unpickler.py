"""A pickle reader for foreign SAE checkpoints (Prisma `.pt` files) that builds plain data only.

Why not `pickle.Unpickler` with a `find_class` allow-list: its BUILD, SETITEM and attribute opcodes act on
whatever object is on the stack, so a file that names an allowed function (say torch's tensor rebuild) can
BUILD on it and rewrite its `__defaults__` for the whole process. Here the pickle program is interpreted
by our own small machine:

- a global is a *name* (:class:`GlobalName`), never the live object, so nothing outside the load can be
  reached, let alone mutated;
- calling a name (REDUCE / NEWOBJ) runs one of a fixed set of constructions, each checking its arguments:
  tensor and storage rebuilds (sizes checked against the stored bytes), OrderedDict, torch.Size/device/dtype,
  set/frozenset/complex/slice/bytes, numpy scalars and arrays of plain dtypes;
- classes of the config modules (`vit_prisma`, `sae_lens`, ...) become :class:`PickledObject` records, a
  dict of their pickled state; BUILD and item assignment act only on containers made by this load;
- every length comes from bytes that are really in the file (a length beyond them is an error), and each
  storage record is read once and shared by the tensors that view it (as `torch.load` does), so a crafted
  size or a storage named many times cannot allocate more than the file holds;
- nesting is bounded (MAX_DEPTH), a tuple used as a key is bounded in size (MAX_KEY_NODES: CPython hashes
  tuples recursively and uncached), the unfolded result is bounded (MAX_TREE_NODES: a few KB of shared
  references cannot unfold into an exponential tree downstream), and cycles are refused, so the time and
  memory of a load are proportional to the file.

Checkpoints are read from torch's zip format (`torch.save` since torch 1.6), storages from its records.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import math
import pickle
import re
import reprlib
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Classes from these modules are never imported: they load as PickledObject records.
STAND_IN_MODULE_PREFIXES: tuple[str, ...] = (
    "vit_prisma",
    "sae_lens",
    "sae_training",
    "torch.nn.modules",  # e.g. an nn.ReLU() kept in activation_fn_kwargs
    "__main__",
)
MAX_TENSOR_DIMS = 64
MAX_PICKLE_BYTES = 256 * 2**20  # the pickle program itself (weights live in separate records)
MAX_DEPTH = 100  # containers inside containers (configs nest a few levels)
MAX_KEY_NODES = 1_000  # nodes of one hashed tuple / frozenset (a dict key or a set item)
MAX_TREE_NODES = 1_000_000  # nodes of the loaded object unfolded as a tree (a tensor is one node)


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something outside what a checkpoint needs; nothing it names was run."""


@dataclass(frozen=True)
class GlobalName:
    """A global named by the pickle (`module.name`): a name only, the object is never looked up."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


class PickledObject(dict):
    """An instance of a class that is not imported (e.g. a vit_prisma config): its pickled state as a dict.

    `pickled_class` keeps the original class's dotted name; constructor arguments, if any, are kept under
    `_stand_in_args` / `_stand_in_kwargs`.
    """

    __slots__ = ("pickled_class",)

    def __init__(self, pickled_class: str) -> None:
        super().__init__()
        self.pickled_class = pickled_class

    def __repr__(self) -> str:
        return f"<PickledObject {self.pickled_class} {sorted(map(str, self))}>"


@dataclass
class _Storage:
    """A storage read from the archive: a flat, writable CPU tensor over its bytes, read once per record."""

    flat: torch.Tensor


@dataclass
class _NumpyDType:
    """np.dtype(spec) as pickled, before its BUILD sets the byte order."""

    spec: str
    byteorder: str = "="

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafePickleError(f"numpy dtype {_show(self.spec)} is not a plain numeric dtype")
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


@dataclass
class _NumpyArray:
    """numpy.core.multiarray._reconstruct(ndarray, ...) before its BUILD fills it in."""

    value: np.ndarray | None = None


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60


def _show(value: Any) -> str:
    """A bounded repr for messages: a crafted value may be deep or wide."""
    try:
        return _SHORT_REPR.repr(value)
    except Exception:  # a repr that fails must not hide the refusal it explains
        return f"<{type(value).__name__}>"


def _refuse(what: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"refusing to unpickle {what}: a checkpoint may only hold tensors, storages, torch dtypes/devices, plain containers "
        f"and the state of {', '.join(STAND_IN_MODULE_PREFIXES)} config classes; nothing was executed. If you "
        "trust this file, load it yourself with torch.load(path, weights_only=False) and pass the state dict to "
        "sae_clip_plugin.pretrained.convert_prisma()."
    )


def _is_stand_in_module(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in STAND_IN_MODULE_PREFIXES)


def _normalise_global(module: str, name: str) -> GlobalName:
    # protocol <= 2 pickles spell Python 3 names the Python 2 way (__builtin__, copy_reg)
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if module.startswith("numpy._core."):  # numpy 2 spelling of numpy 1's numpy.core
        module = "numpy.core." + module.removeprefix("numpy._core.")
    return GlobalName(module, name)


# ------------------------------------------------------------------ value checks


def _int(value: Any, what: str, low: int = 0) -> int:
    if type(value) is not int or value < low:
        raise _refuse(f"{what} {_show(value)} (expected an integer >= {low})")
    return value


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_TENSOR_DIMS:
        raise _refuse(f"{what} {_show(value)} (expected a tuple of at most {MAX_TENSOR_DIMS} integers)")
    return tuple(_int(v, what) for v in value)


def _empty_hooks(value: Any) -> None:
    if value is not None and not (type(value) in (dict, collections.OrderedDict) and not value):
        raise _refuse("tensor backward hooks")


def _empty_state(value: Any, what: str) -> None:
    if value is None or (type(value) in (dict, collections.OrderedDict, tuple) and not value):
        return
    raise _refuse(f"{what} {_show(value)}")


# ------------------------------------------------------------------ tensor rebuilds


def _view(
    storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The tensor (storage, offset, size, stride): a view sharing the storage, as `torch.load` returns it.

    Refused: elements outside the stored bytes, and views with more elements than the storage holds from
    `offset` (stride-0 or overlapping expansions whose size the file does not pay for). Sharing, not
    copying, is what keeps a storage named N times from costing N copies.
    """
    if not isinstance(storage, _Storage):
        raise _refuse(f"a tensor rebuilt from {type(storage).__name__} (expected a storage record)")
    flat = storage.flat if dtype is None else _retype(storage.flat, dtype)
    offset = _int(offset, "storage offset")
    size, stride = _int_tuple(tuple(size), "tensor size"), _int_tuple(tuple(stride), "tensor stride")
    if len(size) != len(stride):
        raise _refuse(f"tensor size {size} with stride {stride} of another length")
    numel = math.prod(size)
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= flat.numel() or numel > flat.numel() - offset:
            raise _refuse(
                f"a tensor of size {size}, stride {stride}, offset {offset} over a storage of {flat.numel()} "
                "elements (it would reach outside the stored data or expand it)"
            )
    return flat.as_strided(size, stride, offset) if numel else torch.empty(size, dtype=flat.dtype)


def _retype(flat: torch.Tensor, dtype: Any) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise _refuse(f"tensor dtype {_show(dtype)}")
    if flat.dtype == dtype:
        return flat
    if flat.dtype != torch.uint8 or flat.numel() % dtype.itemsize:
        raise _refuse(f"a {dtype} view of a {flat.dtype} storage of {flat.numel()} elements")
    return flat.view(dtype)


def _rebuild_tensor(storage, offset, size, stride, *rest) -> torch.Tensor:
    """torch._utils._rebuild_tensor(_v2): (storage, offset, size, stride[, requires_grad, hooks[, metadata]])."""
    if len(rest) > 3:
        raise _refuse("extra tensor rebuild arguments")
    tensor = _view(storage, offset, size, stride)
    if rest:
        _check_grad_flag(rest[0])
    if len(rest) > 1:
        _empty_hooks(rest[1])
    if len(rest) > 2:
        _empty_state(rest[2], "tensor metadata (conj/neg bits)")
    return tensor


def _rebuild_tensor_v3(
    storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None
) -> torch.Tensor:
    _check_grad_flag(requires_grad)
    _empty_hooks(hooks)
    _empty_state(metadata, "tensor metadata (conj/neg bits)")
    return _view(storage, offset, size, stride, dtype=dtype)


def _check_grad_flag(value: Any) -> None:
    if type(value) is not bool:
        raise _refuse(f"requires_grad {_show(value)}")


def _rebuild_parameter(data, requires_grad, hooks, state=None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _refuse(f"a parameter over {type(data).__name__}")
    _check_grad_flag(requires_grad)
    _empty_hooks(hooks)
    _empty_state(state, "parameter state")
    return data  # the weights only: a plain tensor, no grad


def _rebuild_from_type_v2(func, new_type, args, state) -> torch.Tensor:
    if new_type not in (GlobalName("torch", "Tensor"), GlobalName("torch.nn.parameter", "Parameter")):
        raise _refuse(f"a tensor of type {new_type}")
    _empty_state(state, "tensor state")
    if not isinstance(args, tuple):
        raise _refuse("tensor rebuild arguments")
    return _call(func, args)


# ------------------------------------------------------------------ other constructions


def _ordered_dict(*args) -> collections.OrderedDict:
    if args and (len(args) != 1 or not isinstance(args[0], (list, tuple))):
        raise _refuse("OrderedDict arguments")
    out: collections.OrderedDict = collections.OrderedDict()
    for pair in args[0] if args else ():
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise _refuse("an OrderedDict item that is not a pair")
        out[pair[0]] = pair[1]
    return out


def _torch_size(dims=()) -> torch.Size:
    return torch.Size(_int_tuple(tuple(dims) if isinstance(dims, list) else dims, "torch.Size"))


def _torch_device(kind, index=None) -> torch.device:
    if not isinstance(kind, str) or (index is not None and type(index) is not int):
        raise _refuse(f"torch.device({_show(kind)}, {_show(index)})")
    return torch.device(kind) if index is None else torch.device(kind, index)


def _collection(factory: type) -> Callable[..., Any]:
    def build(items=()) -> Any:
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise _refuse(f"{factory.__name__}({type(items).__name__})")
        return factory(items)

    return build


def _complex(real=0.0, imag=0.0) -> complex:
    if not all(type(v) in (int, float) for v in (real, imag)):
        raise _refuse("complex arguments")
    return complex(real, imag)


def _slice(*args) -> slice:
    if len(args) > 3 or not all(v is None or type(v) is int for v in args):
        raise _refuse("slice arguments")
    return slice(*args)


def _encode(text, encoding="latin1") -> bytes:
    """_codecs.encode(str, 'latin1'): how protocol 2 spells bytes."""
    if not (isinstance(text, str) and isinstance(encoding, str)) or codecs.lookup(encoding).name not in (
        "latin-1",
        "iso8859-1",
        "utf-8",
    ):
        raise _refuse(f"_codecs.encode with {_show(encoding)}")
    return text.encode(encoding)


def _bytearray(data=b"", encoding=None) -> bytearray:
    # bytearray(int) would allocate a size the file does not hold: only bytes and text are taken
    if isinstance(data, (bytes, bytearray)) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and isinstance(encoding, str):
        return bytearray(_encode(data, encoding))
    raise _refuse(f"bytearray({type(data).__name__})")


def _numpy_dtype(spec, align=False, copy=True) -> _NumpyDType:
    if not isinstance(spec, str):
        raise _refuse(f"numpy dtype {_show(spec)}")
    _NumpyDType(spec).resolve()  # checked now, byte order set by BUILD
    return _NumpyDType(spec)


def _numpy_scalar(dtype, data=None) -> Any:
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise _refuse("numpy scalar arguments")
    resolved = dtype.resolve()
    if len(data) != resolved.itemsize:
        raise _refuse(f"a numpy {resolved} scalar of {len(data)} bytes")
    return np.frombuffer(data, dtype=resolved)[0].copy()


def _numpy_frombuffer(buffer, dtype, shape, order) -> np.ndarray:
    """numpy.core.numeric._frombuffer: how protocol 5 spells an array (data in-band)."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, _NumpyDType) or order not in "CF":
        raise _refuse("numpy _frombuffer arguments")
    resolved, shape = dtype.resolve(), _int_tuple(shape, "numpy shape")
    if len(buffer) != math.prod(shape) * resolved.itemsize:
        raise _refuse(f"a numpy array of shape {shape} with {len(buffer)} bytes of data")
    return np.frombuffer(bytes(buffer), dtype=resolved).reshape(shape, order=order).copy()


def _numpy_reconstruct(cls, shape, typecode) -> _NumpyArray:
    if cls != GlobalName("numpy", "ndarray"):
        raise _refuse(f"numpy _reconstruct of {cls}")
    return _NumpyArray()


def _numpy_array_state(array: _NumpyArray, state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _NumpyDType)):
        raise _refuse("numpy array state")
    _, shape, dtype, fortran, raw = state
    shape = _int_tuple(shape, "numpy shape")
    resolved = dtype.resolve()
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape) * resolved.itemsize:
        raise _refuse(f"a numpy array of shape {shape} with {len(raw)} bytes of data")
    array.value = (
        np.frombuffer(bytes(raw), dtype=resolved).reshape(shape, order="F" if fortran else "C").copy()
    )


_CONSTRUCTIONS: dict[GlobalName, Callable[..., Any]] = {
    GlobalName("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    GlobalName("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    GlobalName("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    GlobalName("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    GlobalName("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    GlobalName("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    GlobalName("collections", "OrderedDict"): _ordered_dict,
    GlobalName("torch", "Size"): _torch_size,
    GlobalName("torch", "device"): _torch_device,
    GlobalName("builtins", "set"): _collection(set),
    GlobalName("builtins", "frozenset"): _collection(frozenset),
    GlobalName("builtins", "complex"): _complex,
    GlobalName("builtins", "slice"): _slice,
    GlobalName("builtins", "bytearray"): _bytearray,
    GlobalName("_codecs", "encode"): _encode,
    GlobalName("numpy", "dtype"): _numpy_dtype,
    GlobalName("numpy.core.multiarray", "scalar"): _numpy_scalar,
    GlobalName("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    GlobalName("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
}
_HASHING_CONSTRUCTIONS = {
    GlobalName("collections", "OrderedDict"),
    GlobalName("builtins", "set"),
    GlobalName("builtins", "frozenset"),
}
# Names that may appear as arguments (types handed to a construction), never called themselves.
_NAMES_AS_VALUES = {
    GlobalName("torch", "Tensor"),
    GlobalName("torch.nn.parameter", "Parameter"),
    GlobalName("numpy", "ndarray"),
    GlobalName("builtins", "object"),
}


def _call(func: Any, args: tuple, kwargs: dict | None = None) -> Any:
    """REDUCE / NEWOBJ: run the construction a name stands for, or make a record of a config class."""
    if not isinstance(func, GlobalName):
        raise _refuse(f"calling a {type(func).__name__}")
    if func in _CONSTRUCTIONS:
        try:
            return _CONSTRUCTIONS[func](*args, **(kwargs or {}))
        except UnsafePickleError:
            raise
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise _refuse(f"{func}{_show(args)}: {err}") from None
    if func == GlobalName("copyreg", "_reconstructor"):  # object.__reduce_ex__(<2) of a config class
        if len(args) != 3 or not isinstance(args[0], GlobalName):
            raise _refuse("copyreg._reconstructor arguments")
        return _call(args[0], ())
    if _is_stand_in_module(func.module):
        obj = PickledObject(str(func))
        if args:
            obj["_stand_in_args"] = list(args)
        if kwargs:
            obj["_stand_in_kwargs"] = dict(kwargs)
        return obj
    raise _refuse(f"calling global '{func}'")


def _build(obj: Any, state: Any) -> None:
    """BUILD: only on records this load made (a config record, a numpy array or dtype)."""
    if isinstance(obj, PickledObject):
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if type(part) in (dict, collections.OrderedDict, PickledObject):
                obj.update(part)
            elif part is not None:
                obj["_stand_in_state"] = part
    elif isinstance(obj, _NumpyDType):
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "=", "|")):
            raise _refuse("numpy dtype state")
        obj.byteorder = state[1]
    elif isinstance(obj, _NumpyArray):
        _numpy_array_state(obj, state)
    elif type(obj) is collections.OrderedDict:
        _state_dict_metadata(obj, state)
    else:
        raise _refuse(f"setting the state of {_describe(obj)}")


_PLAIN_METADATA = (str, int, float, bool, type(None))


def _state_dict_metadata(target: collections.OrderedDict, state: Any) -> None:
    """What `torch.save(module.state_dict())` writes: `{"_metadata": {module prefix: {"version": 1, ...}}}`.

    `nn.Module.state_dict` returns an OrderedDict carrying the modules' versions as the attribute `_metadata`,
    pickled as a BUILD on it. Only that exact shape is taken (prefix strings mapping to dicts of plain values),
    once per OrderedDict; it is kept as the attribute, so `load_state_dict` sees the versions it would in torch.
    """
    metadata = state.get("_metadata") if type(state) is dict and len(state) == 1 else None
    if type(metadata) is not collections.OrderedDict or hasattr(target, "_metadata"):
        raise _refuse(f"setting the state of an OrderedDict to {_show(state)}")
    for prefix, entry in metadata.items():
        if not (
            type(prefix) is str
            and type(entry) is dict
            and all(type(k) is str and type(v) in _PLAIN_METADATA for k, v in entry.items())
        ):
            raise _refuse(f"state-dict metadata {_show(prefix)}: {_show(entry)}")
    target._metadata = metadata  # type: ignore[attr-defined]


def _describe(obj: Any) -> str:
    return f"global '{obj}'" if isinstance(obj, GlobalName) else f"a {type(obj).__name__}"


# ------------------------------------------------------------------ the pickle machine


class _Mark:
    """The MARK sentinel on the stack."""


_MARK = _Mark()


class _Machine:
    """Interprets a pickle program; see the module docstring for what it allows."""

    def __init__(self, data: bytes, persistent_load: Callable[[Any], Any]) -> None:
        self.raw = bytes(data)
        self.data = memoryview(self.raw)
        self.pos = 0
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.persistent_load = persistent_load
        # id -> (tuple or frozenset, depth, unfolded nodes), for every one this load made; the object is
        # kept so its id cannot be reused by another
        self.hashables: dict[int, tuple[Any, int, int]] = {}

    # -- bounds on what CPython hashes recursively
    def measure(self, obj: Any) -> tuple[int, int]:
        """(depth, unfolded nodes) of a tuple / frozenset; other values count as one node."""
        if not isinstance(obj, (tuple, frozenset)):
            return 0, 1
        known = self.hashables.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1], known[2]
        return self.track(obj)

    def track(self, obj: Any) -> tuple[int, int]:
        """Record a new tuple / frozenset from its items' measures; refuse one nested beyond MAX_DEPTH."""
        depth, nodes = 0, 1
        for item in obj:
            item_depth, item_nodes = self.measure(item)
            depth, nodes = max(depth, item_depth), nodes + item_nodes
        depth += 1
        if depth > MAX_DEPTH:
            raise _refuse(f"containers nested more than {MAX_DEPTH} deep")
        nodes = min(nodes, MAX_TREE_NODES + 1)  # the same clamped count whether fresh or looked up
        self.hashables[id(obj)] = (obj, depth, nodes)
        return depth, nodes

    def push_new(self, obj: Any) -> None:
        """Push a value this load built, tracking it if it is a tuple or frozenset."""
        if isinstance(obj, (tuple, frozenset)):
            self.track(obj)
        self.stack.append(obj)

    def check_keys(self, keys: Any) -> None:
        """Items about to be hashed (dict keys, set items): a crafted deep or shared tuple must not be."""
        for key in keys:
            if isinstance(key, (tuple, frozenset)) and self.measure(key)[1] > MAX_KEY_NODES:
                raise _refuse(f"a dict key or set item of more than {MAX_KEY_NODES} nested values")

    # -- reading
    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise UnsafePickleError(f"truncated pickle: {n} bytes asked for at offset {self.pos}")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def readline(self) -> bytes:
        end = self.raw.find(b"\n", self.pos)
        if end < 0:
            raise UnsafePickleError("truncated pickle: missing newline")
        return self.read(end + 1 - self.pos)[:-1]

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    # -- stack
    def pop(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise UnsafePickleError("malformed pickle: stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise UnsafePickleError("malformed pickle: no MARK")

    def top(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise UnsafePickleError("malformed pickle: stack underflow")
        return self.stack[-1]

    def run(self) -> Any:
        ops = _OPS
        while True:
            code = self.read(1)
            handler = ops.get(code)
            if handler is None:
                raise _refuse(f"pickle opcode {_show(code)} at offset {self.pos - 1}")
            if handler is _stop:
                return self.pop()
            try:
                handler(self)
            except (UnsafePickleError, MemoryError):
                raise
            except RecursionError:
                raise _refuse(f"a structure nested too deeply at offset {self.pos}") from None
            except (TypeError, ValueError, KeyError, IndexError, UnicodeDecodeError, struct.error) as err:
                raise UnsafePickleError(f"malformed pickle at offset {self.pos}: {err}") from None


def _stop(m: _Machine) -> None:  # pragma: no cover - handled in run()
    pass


def _memo_get(m: _Machine, index: int) -> None:
    if index not in m.memo:
        raise UnsafePickleError(f"malformed pickle: memo {index} read before it is written")
    m.stack.append(m.memo[index])


def _set_items(m: _Machine, items: list[Any]) -> None:
    target = m.top()
    if type(target) not in (dict, collections.OrderedDict, PickledObject) or len(items) % 2:
        raise _refuse(f"item assignment on {_describe(target)}")
    m.check_keys(items[0::2])
    for k in range(0, len(items), 2):
        target[items[k]] = items[k + 1]


def _append(m: _Machine, items: list[Any]) -> None:
    target = m.top()
    if type(target) is not list:
        raise _refuse(f"appending to {_describe(target)}")
    target.extend(items)


def _add_items(m: _Machine, items: list[Any]) -> None:
    target = m.top()
    if type(target) is not set:
        raise _refuse(f"adding items to {_describe(target)}")
    m.check_keys(items)
    target.update(items)


# torch's dtypes by name, read from what torch already holds: looking a name up with getattr would import
# any lazily loaded submodule it names (torch._inductor: 139 modules) before the refusal.
_TORCH_DTYPES = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}


def _value_global(name: GlobalName) -> Any:
    """What GLOBAL pushes: torch dtypes as themselves (immutable), every other global as its name."""
    if name.module == "torch" and name.name in _TORCH_DTYPES:
        return _TORCH_DTYPES[name.name]
    if (
        name in _CONSTRUCTIONS
        or name in _NAMES_AS_VALUES
        or name == GlobalName("copyreg", "_reconstructor")
        or _is_stand_in_module(name.module)
        or (name.module == "torch" and name.name.endswith("Storage"))
    ):
        return name
    raise _refuse(f"global '{name}'")


def _text_global(m: _Machine) -> None:
    module = m.readline().decode("utf-8")
    name = m.readline().decode("utf-8")
    m.stack.append(_value_global(_normalise_global(module, name)))


def _stack_global(m: _Machine) -> None:
    name, module = m.pop(), m.pop()
    if not (isinstance(module, str) and isinstance(name, str)):
        raise UnsafePickleError("malformed pickle: STACK_GLOBAL needs two strings")
    m.stack.append(_value_global(_normalise_global(module, name)))


def _call_checked(m: _Machine, func: Any, args: tuple, kwargs: dict | None = None) -> Any:
    """_call, after bounding what the hashing constructions (set, frozenset, OrderedDict) will hash."""
    if (
        isinstance(func, GlobalName)
        and func in _HASHING_CONSTRUCTIONS
        and args
        and isinstance(args[0], (list, tuple, set, frozenset))
    ):
        items = args[0]
        if func == GlobalName("collections", "OrderedDict"):
            items = [pair[0] for pair in items if isinstance(pair, (list, tuple)) and pair]
        m.check_keys(items)
    return _call(func, args, kwargs)


def _reduce(m: _Machine) -> None:
    args, func = m.pop(), m.pop()
    if not isinstance(args, tuple):
        raise UnsafePickleError("malformed pickle: REDUCE arguments are not a tuple")
    m.push_new(_call_checked(m, func, args))


def _newobj(m: _Machine) -> None:
    args, cls = m.pop(), m.pop()
    if not isinstance(args, tuple):
        raise UnsafePickleError("malformed pickle: NEWOBJ arguments are not a tuple")
    m.push_new(_call_checked(m, cls, args))


def _newobj_ex(m: _Machine) -> None:
    kwargs, args, cls = m.pop(), m.pop(), m.pop()
    if not isinstance(args, tuple) or type(kwargs) is not dict:
        raise UnsafePickleError("malformed pickle: NEWOBJ_EX arguments")
    m.push_new(_call_checked(m, cls, args, kwargs))


def _build_op(m: _Machine) -> None:
    state = m.pop()
    _build(m.top(), state)


def _text_int(m: _Machine) -> None:
    line = m.readline()
    m.stack.append(False if line == b"00" else True if line == b"01" else int(line))


def _text_string(m: _Machine) -> None:
    raw = m.readline().strip()
    if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
        raise UnsafePickleError("malformed pickle: STRING not quoted")
    m.stack.append(codecs.escape_decode(raw[1:-1])[0].decode("utf-8"))


def _push(value_of: Callable[[_Machine], Any]) -> Callable[[_Machine], None]:
    return lambda m: m.stack.append(value_of(m))


def _put(index_of: Callable[[_Machine], int]) -> Callable[[_Machine], None]:
    def put(m: _Machine) -> None:
        m.memo[index_of(m)] = m.top()

    return put


def _get(index_of: Callable[[_Machine], int]) -> Callable[[_Machine], None]:
    return lambda m: _memo_get(m, index_of(m))


def _frozen(m: _Machine) -> None:
    items = m.pop_mark()
    m.check_keys(items)
    m.push_new(frozenset(items))


def _proto(m: _Machine) -> None:
    if m.read(1)[0] > pickle.HIGHEST_PROTOCOL:
        raise UnsafePickleError("unsupported pickle protocol")


def _persid(m: _Machine, pid: Any) -> None:
    m.stack.append(m.persistent_load(pid))


def _tuple_of(n: int) -> Callable[[_Machine], None]:
    def make(m: _Machine) -> None:
        items = [m.pop() for _ in range(n)][::-1]
        m.push_new(tuple(items))

    return make


def _dup(m: _Machine) -> None:
    m.stack.append(m.top())


def _pop(m: _Machine) -> None:
    if m.stack and m.stack[-1] is _MARK:
        m.stack.pop()
    else:
        m.pop()


def _dict_from_mark(m: _Machine) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        raise UnsafePickleError("malformed pickle: DICT with an odd number of items")
    m.check_keys(items[0::2])
    m.stack.append({items[k]: items[k + 1] for k in range(0, len(items), 2)})


def _raise_unsupported(what: str) -> Callable[[_Machine], None]:
    def refuse(m: _Machine) -> None:
        raise _refuse(what)

    return refuse


_OPS: dict[bytes, Callable[[_Machine], None]] = {
    pickle.PROTO: _proto,
    pickle.FRAME: lambda m: m.read(8),
    pickle.STOP: _stop,
    pickle.MARK: lambda m: m.stack.append(_MARK),
    pickle.POP: _pop,
    pickle.POP_MARK: lambda m: m.pop_mark(),
    pickle.DUP: _dup,
    # scalars
    pickle.NONE: lambda m: m.stack.append(None),
    pickle.NEWTRUE: lambda m: m.stack.append(True),
    pickle.NEWFALSE: lambda m: m.stack.append(False),
    pickle.INT: _text_int,
    pickle.BININT: _push(lambda m: m.unpack("<i")),
    pickle.BININT1: _push(lambda m: m.read(1)[0]),
    pickle.BININT2: _push(lambda m: m.unpack("<H")),
    pickle.LONG: _push(lambda m: int(m.readline().rstrip(b"L"))),
    pickle.LONG1: _push(lambda m: pickle.decode_long(m.read(m.read(1)[0]))),
    pickle.LONG4: _push(lambda m: pickle.decode_long(m.read(m.unpack("<i")))),
    pickle.FLOAT: _push(lambda m: float(m.readline())),
    pickle.BINFLOAT: _push(lambda m: m.unpack(">d")),
    # text and bytes (every length is checked against the bytes left in the file)
    pickle.STRING: _text_string,
    pickle.BINSTRING: _push(lambda m: m.read(m.unpack("<i")).decode("utf-8")),
    pickle.SHORT_BINSTRING: _push(lambda m: m.read(m.read(1)[0]).decode("utf-8")),
    pickle.UNICODE: _push(lambda m: m.readline().decode("raw-unicode-escape")),
    pickle.BINUNICODE: _push(lambda m: m.read(m.unpack("<I")).decode("utf-8", "surrogatepass")),
    pickle.SHORT_BINUNICODE: _push(lambda m: m.read(m.read(1)[0]).decode("utf-8", "surrogatepass")),
    pickle.BINUNICODE8: _push(lambda m: m.read(m.unpack("<Q")).decode("utf-8", "surrogatepass")),
    pickle.BINBYTES: _push(lambda m: m.read(m.unpack("<I"))),
    pickle.SHORT_BINBYTES: _push(lambda m: m.read(m.read(1)[0])),
    pickle.BINBYTES8: _push(lambda m: m.read(m.unpack("<Q"))),
    pickle.BYTEARRAY8: _push(lambda m: bytearray(m.read(m.unpack("<Q")))),
    # containers (new, so owned by this load)
    pickle.EMPTY_LIST: lambda m: m.stack.append([]),
    pickle.EMPTY_DICT: lambda m: m.stack.append({}),
    pickle.EMPTY_TUPLE: lambda m: m.stack.append(()),
    pickle.EMPTY_SET: lambda m: m.stack.append(set()),
    pickle.LIST: lambda m: m.stack.append(m.pop_mark()),
    pickle.TUPLE: lambda m: m.push_new(tuple(m.pop_mark())),
    pickle.TUPLE1: _tuple_of(1),
    pickle.TUPLE2: _tuple_of(2),
    pickle.TUPLE3: _tuple_of(3),
    pickle.DICT: _dict_from_mark,
    pickle.FROZENSET: _frozen,
    pickle.APPEND: lambda m: _append(m, [m.pop()]),
    pickle.APPENDS: lambda m: _append(m, m.pop_mark()),
    pickle.SETITEM: lambda m: _set_items(m, [*reversed([m.pop(), m.pop()])]),
    pickle.SETITEMS: lambda m: _set_items(m, m.pop_mark()),
    pickle.ADDITEMS: lambda m: _add_items(m, m.pop_mark()),
    # memo
    pickle.PUT: _put(lambda m: int(m.readline())),
    pickle.BINPUT: _put(lambda m: m.read(1)[0]),
    pickle.LONG_BINPUT: _put(lambda m: m.unpack("<I")),
    pickle.MEMOIZE: lambda m: m.memo.__setitem__(len(m.memo), m.top()),
    pickle.GET: _get(lambda m: int(m.readline())),
    pickle.BINGET: _get(lambda m: m.read(1)[0]),
    pickle.LONG_BINGET: _get(lambda m: m.unpack("<I")),
    # names, calls and state
    pickle.GLOBAL: _text_global,
    pickle.STACK_GLOBAL: _stack_global,
    pickle.REDUCE: _reduce,
    pickle.NEWOBJ: _newobj,
    pickle.NEWOBJ_EX: _newobj_ex,
    pickle.BUILD: _build_op,
    pickle.PERSID: lambda m: _persid(m, m.readline().decode("ascii")),
    pickle.BINPERSID: lambda m: _persid(m, m.pop()),
    # never needed by a checkpoint
    pickle.INST: _raise_unsupported("the INST opcode (old-style instance creation)"),
    pickle.OBJ: _raise_unsupported("the OBJ opcode (old-style instance creation)"),
    pickle.EXT1: _raise_unsupported("copyreg extension codes"),
    pickle.EXT2: _raise_unsupported("copyreg extension codes"),
    pickle.EXT4: _raise_unsupported("copyreg extension codes"),
    pickle.NEXT_BUFFER: _raise_unsupported("out-of-band buffers"),
    pickle.READONLY_BUFFER: _raise_unsupported("out-of-band buffers"),
}


def safe_unpickle(data: bytes, persistent_load: Callable[[Any], Any] | None = None) -> Any:
    """Run the pickle program `data` on the restricted machine; returns plain data (see the module docstring)."""

    def no_persistent(pid: Any) -> Any:
        raise _refuse(f"persistent id {_show(pid)} outside a torch archive")

    try:
        return _Finisher().finish(_Machine(data, persistent_load or no_persistent).run())
    except RecursionError:
        raise _refuse("a structure nested too deeply") from None


class _Finisher:
    """Replaces the machine's transient records (numpy arrays, dtypes) by their values, once per object.

    Shared objects stay shared (each pickled object is finished once), cycles are refused, and the result
    unfolded as a tree is bounded by MAX_TREE_NODES and MAX_DEPTH, so any plain recursive walk over it
    (to_plain, json.dumps, a config reader) costs at most that.
    """

    def __init__(self) -> None:
        self.done: dict[int, tuple[Any, Any, int]] = {}  # id -> (source object kept alive, result, nodes)
        self.active: set[int] = set()

    def finish(self, obj: Any) -> Any:
        result, nodes = self.visit(obj, 0)
        if nodes > MAX_TREE_NODES:
            raise _refuse(f"a structure of more than {MAX_TREE_NODES} values once shared references unfold")
        return result

    def visit(self, obj: Any, depth: int) -> tuple[Any, int]:
        if isinstance(obj, _NumpyArray):
            if obj.value is None:
                raise _refuse("a numpy array without data")
            return obj.value, 1
        if isinstance(obj, _NumpyDType):
            return obj.resolve(), 1
        container = type(obj) in (dict, collections.OrderedDict, PickledObject, list, set) or isinstance(
            obj, (tuple, frozenset)
        )
        if not container:
            return obj, 1
        known = self.done.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1], known[2]
        if id(obj) in self.active:
            raise _refuse(f"a {type(obj).__name__} that contains itself")
        if depth >= MAX_DEPTH:
            raise _refuse(f"containers nested more than {MAX_DEPTH} deep")
        self.active.add(id(obj))
        result, nodes = self._rebuild(obj, depth + 1)
        self.active.discard(id(obj))
        nodes = min(nodes, MAX_TREE_NODES + 1)
        self.done[id(obj)] = (obj, result, nodes)
        return result, nodes

    def _rebuild(self, obj: Any, depth: int) -> tuple[Any, int]:
        nodes = 1
        # dict, OrderedDict, PickledObject: finished in place (they are this load's)
        if isinstance(obj, dict):
            for key, value in list(obj.items()):
                key_nodes = self.visit(key, depth)[1]  # keys are hashable, so nothing to replace in them
                obj[key], value_nodes = self.visit(value, depth)
                nodes += key_nodes + value_nodes
            return obj, nodes
        if type(obj) is list:
            for i, value in enumerate(obj):
                obj[i], value_nodes = self.visit(value, depth)
                nodes += value_nodes
            return obj, nodes
        items = []
        for value in obj:  # tuple (torch.Size included), set, frozenset
            item, item_nodes = self.visit(value, depth)
            items.append(item)
            nodes += item_nodes
        if type(obj) is torch.Size:
            return obj, nodes
        return type(obj)(items), nodes


# ------------------------------------------------------------------ torch's zip archive


_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _storage_dtype(storage_type: Any) -> torch.dtype:
    if not (isinstance(storage_type, GlobalName) and storage_type.module == "torch"):
        raise _refuse(f"storage type {_show(storage_type)}")
    if storage_type.name == "UntypedStorage":
        return torch.uint8
    try:
        return torch.serialization.StorageType(storage_type.name).dtype
    except (KeyError, AttributeError):
        raise _refuse(f"storage type torch.{storage_type.name}") from None


class _TorchArchive:
    """Reads torch.save's zip layout: `<prefix>/data.pkl`, `<prefix>/data/<key>` records, `<prefix>/byteorder`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.zip = zipfile.ZipFile(path)
        pkl = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise UnsafePickleError(f"{path}: not a torch.save archive (expected one <name>/data.pkl)")
        self.prefix = pkl[0][: -len("data.pkl")]
        byteorder = self._read(self.prefix + "byteorder", optional=True)
        if byteorder not in (None, b"little"):
            raise UnsafePickleError(
                f"{path}: saved on a {_show(byteorder)}-endian machine; re-save it with torch.save on a little-endian one"
            )
        self.storages: dict[str, _Storage] = {}

    def _info(self, name: str, optional: bool = False) -> zipfile.ZipInfo | None:
        """The record's entry, checked: stored (torch.save never compresses) and no larger than the file."""
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            if optional:
                return None
            raise UnsafePickleError(f"{self.path}: record {_show(name)} is missing") from None
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > self.size:
            raise UnsafePickleError(
                f"{self.path}: record {_show(name)} is compressed or larger than the file"
            )
        return info

    def _read(self, name: str, optional: bool = False) -> bytes | None:
        info = self._info(name, optional)
        return None if info is None else self.zip.read(info)

    def _read_record(self, name: str) -> torch.Tensor:
        """A storage record's bytes read straight from the file into one buffer (no second copy)."""
        info = self._info(name)
        assert info is not None
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            header = f.read(30)
            if len(header) != 30 or header[:4] != b"PK\x03\x04":
                raise UnsafePickleError(f"{self.path}: record {_show(name)} has no local header")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            # torch.empty, not bytearray: no zero-filling pass over what the read overwrites anyway
            buffer = torch.empty(info.file_size, dtype=torch.uint8)
            if info.file_size and f.readinto(memoryview(buffer.numpy())) != info.file_size:
                raise UnsafePickleError(f"{self.path}: record {_show(name)} is truncated")
        return buffer

    def pickle_program(self) -> bytes:
        data = self._read(self.prefix + "data.pkl")
        if len(data) > MAX_PICKLE_BYTES:
            raise UnsafePickleError(f"{self.path}: data.pkl is {len(data)} bytes (limit {MAX_PICKLE_BYTES})")
        return data

    def persistent_load(self, pid: Any) -> _Storage:
        """('storage', storage type, key, location, numel): the record `data/<key>`, its size checked."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _refuse(f"persistent id {_show(pid if isinstance(pid, tuple) else (pid,))}")
        _, storage_type, key, _location, numel = pid
        dtype = _storage_dtype(storage_type)
        if not (isinstance(key, str) and _KEY.match(key)):
            raise _refuse(f"storage key {_show(key)}")
        numel = _int(numel, "storage size")
        if key not in self.storages:
            raw = self._read_record(f"{self.prefix}data/{key}")
            if len(raw) != numel * dtype.itemsize:
                raise _refuse(
                    f"storage {key}: {numel} x {dtype} declared but the record holds {len(raw)} bytes"
                )
            self.storages[key] = _Storage(_flat_tensor(raw, dtype))
        storage = self.storages[key]
        if storage.flat.numel() * storage.flat.element_size() != numel * dtype.itemsize:
            raise _refuse(f"storage {key} declared with two sizes")
        return _Storage(_retype(storage.flat, dtype)) if storage.flat.dtype != dtype else storage


def _flat_tensor(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The record's bytes (a private uint8 tensor) seen as `dtype`, without another copy."""
    return raw.view(dtype) if raw.numel() else torch.empty(0, dtype=dtype)


_CORRUPT_ARCHIVE = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    ValueError,  # UnicodeDecodeError of a damaged file name among them
    struct.error,
    NotImplementedError,  # an unknown compression method
    KeyError,
    IndexError,
    OverflowError,
)


def restricted_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a `torch.save` file as plain data (see the module docstring); raises UnsafePickleError otherwise.

    Tensors come back as fresh, contiguous, CPU tensors moved to `map_location`; config objects as
    :class:`PickledObject` dicts. Nothing outside the returned objects is touched.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafePickleError(
            f"{path}: not a torch zip archive (torch.save's format since torch 1.6); legacy pickles are not "
            "read. Re-save it with a current torch if you trust it."
        )
    try:
        archive = _TorchArchive(path)
        try:
            obj = safe_unpickle(archive.pickle_program(), archive.persistent_load)
        finally:
            archive.zip.close()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except _CORRUPT_ARCHIVE as err:  # zipfile's own errors on damaged central directories and names
        raise UnsafePickleError(f"{path}: corrupt archive ({type(err).__name__}: {err})") from None
    device = torch.device(map_location)
    return obj if device.type == "cpu" else _to_device(obj, device)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if type(obj) in (dict, collections.OrderedDict):
        return type(obj)((k, _to_device(v, device)) for k, v in obj.items())
    return obj


def to_plain(obj: Any) -> Any:
    """Config records -> dicts, names -> dotted strings, dtypes/devices -> strings, containers recursively."""
    if isinstance(obj, GlobalName):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


__all__ = [
    "GlobalName",
    "PickledObject",
    "UnsafePickleError",
    "restricted_torch_load",
    "safe_unpickle",
    "to_plain",
]
