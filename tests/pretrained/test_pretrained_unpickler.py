"""The checkpoint reader never mutates anything outside the objects it creates, and bounds every size.

Attack files are real `torch.save` archives of a valid Prisma SAE whose `data.pkl` gets extra opcodes
spliced in after the protocol header, exactly as a hostile uploader would edit a hub file.
"""

from __future__ import annotations

import collections
import copyreg
import json
import pickle
import re
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from sae_clip_plugin.pretrained import UnsafePickleError, load_prisma_sae, restricted_torch_load
from sae_clip_plugin.pretrained.unpickler import PickledObject, safe_unpickle

D_IN, D_SAE = 8, 32


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g),
        "b_enc": torch.randn(D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_IN, generator=g),
        "b_dec": torch.randn(D_IN, generator=g),
    }


def _config() -> dict:
    return {
        "hook_point_layer": 3,
        "layer_subtype": "hook_resid_post",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "activation_fn_str": "relu",
        "normalize_activations": "none",
    }


def _sae_folder(tmp_path: Path, name: str, payload: dict | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    torch.save(
        payload if payload is not None else {"cfg": None, "state_dict": _weights()}, folder / "weights.pt"
    )
    (folder / "config.json").write_text(json.dumps(_config()))
    return folder


def _text(s: str) -> bytes:
    raw = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _splice(archive: Path, code: bytes) -> None:
    """Insert `code` (which must leave the stack as it found it) right after data.pkl's PROTO header."""
    with zipfile.ZipFile(archive) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            if info.filename.endswith("/data.pkl"):
                assert data[:1] == pickle.PROTO
                data = data[:2] + code + data[2:]
            z.writestr(info, data)


def _slot_build(target: bytes, attr: str, value: bytes) -> bytes:
    """target; (None, {attr: value}); BUILD; POP  -- pickle's BUILD does setattr(target, attr, value)."""
    return (
        target
        + pickle.NONE
        + pickle.EMPTY_DICT
        + _text(attr)
        + value
        + pickle.SETITEM
        + pickle.TUPLE2
        + pickle.BUILD
        + pickle.POP
    )


def _dict_build(target: bytes, key: str, value: bytes) -> bytes:
    """target; {key: value}; BUILD; POP  -- pickle's BUILD updates target.__dict__."""
    return target + pickle.EMPTY_DICT + _text(key) + value + pickle.SETITEM + pickle.BUILD + pickle.POP


NEG_DEFAULTS = (
    pickle.MARK + pickle.EMPTY_DICT + _text("neg_bit") + pickle.NEWTRUE + pickle.SETITEM + pickle.TUPLE
)
ATTACKS = {
    # the reported attack: every later tensor load comes back negated
    "defaults-of-rebuild_tensor_v2": _slot_build(
        _global("torch._utils", "_rebuild_tensor_v2"), "__defaults__", NEG_DEFAULTS
    ),
    "kwdefaults-of-rebuild_parameter": _slot_build(
        _global("torch._utils", "_rebuild_parameter"), "__kwdefaults__", pickle.EMPTY_DICT
    ),
    "dict-of-rebuild_tensor": _dict_build(
        _global("torch._utils", "_rebuild_tensor"), "poisoned", pickle.NEWTRUE
    ),
    "class-attribute-of-OrderedDict": _slot_build(
        _global("collections", "OrderedDict"), "__setitem__", _global("collections", "OrderedDict")
    ),
    "class-attribute-of-torch.Size": _dict_build(_global("torch", "Size"), "poisoned", pickle.NEWTRUE),
    "state-of-torch.float32": _slot_build(_global("torch", "float32"), "is_poisoned", pickle.NEWTRUE),
    "class-attribute-of-the-stand-in": _slot_build(
        _global("vit_prisma.sae.config", "VisionModelSAERunnerConfig"), "__reduce__", pickle.NONE
    ),
    "stand-in-class-dict": _dict_build(
        _global("vit_prisma.sae.config", "VisionModelSAERunnerConfig"), "d_in", pickle.BININT1 + b"\x07"
    ),
    "item-assignment-on-a-global": _global("collections", "OrderedDict")
    + _text("k")
    + pickle.NONE
    + pickle.SETITEM
    + pickle.POP,
    "append-to-torch-registry": _global("torch.serialization", "_package_registry")
    + pickle.NONE
    + pickle.APPEND
    + pickle.POP,
    "attribute-path-of-an-allowed-global": _global("torch._utils", "_rebuild_tensor_v2.__globals__")
    + pickle.POP,
    "protocol-4-attribute-path": _text("torch._utils")
    + _text("_rebuild_tensor_v2.__defaults__")
    + pickle.STACK_GLOBAL
    + pickle.POP,
    "module-dict": _global("torch", "__dict__") + pickle.POP,
}


def _process_state() -> dict:
    """What a poisoned load would change: torch's rebuild functions, registries, containers' classes."""
    funcs = [
        torch._utils._rebuild_tensor,
        torch._utils._rebuild_tensor_v2,
        torch._utils._rebuild_parameter,
        torch._utils._rebuild_parameter_with_state,
        torch._tensor._rebuild_from_type_v2,
    ]
    if hasattr(torch._utils, "_rebuild_tensor_v3"):
        funcs.append(torch._utils._rebuild_tensor_v3)
    return {
        "functions": [(f.__defaults__, f.__kwdefaults__, dict(f.__dict__), f.__code__) for f in funcs],
        "ordered_dict": dict(vars(collections.OrderedDict)),
        "torch_size": dict(vars(torch.Size)),
        "package_registry": list(torch.serialization._package_registry),
        "copyreg": (dict(copyreg.dispatch_table), dict(copyreg._extension_registry)),
        "vit_prisma_imported": any(m.startswith("vit_prisma") for m in sys.modules),
    }


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_crafted_checkpoint_is_refused_and_changes_nothing(attack, tmp_path):
    good = _sae_folder(tmp_path, "good")
    before_state = _process_state()
    before = load_prisma_sae(good)

    evil = _sae_folder(tmp_path, "evil")
    _splice(evil / "weights.pt", ATTACKS[attack])
    with pytest.raises(UnsafePickleError, match="refusing to unpickle") as info:
        load_prisma_sae(evil)
    assert "weights.pt" in str(info.value)  # names the file

    assert _process_state() == before_state
    after = load_prisma_sae(good)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        a, b = getattr(before, name), getattr(after, name)
        assert torch.equal(a, b) and not b.is_neg()
        assert a.detach().numpy().tobytes() == b.detach().numpy().tobytes()
    plain = torch.load(good / "weights.pt", weights_only=True)
    assert not plain["state_dict"]["W_enc"].is_neg()
    torch.testing.assert_close(plain["state_dict"]["W_enc"], _weights()["W_enc"], rtol=0, atol=0)


def test_the_splice_itself_is_a_working_attack_on_plain_pickle(tmp_path):
    """Sanity of the test: pickle's own Unpickler applies the spliced BUILD (checked on a harmless target)."""

    target = _slot_build(_global(__name__, "_Target"), "value", pickle.NEWTRUE)
    payload = pickle.PROTO + b"\x02" + target + pickle.NONE + pickle.STOP
    pickle.loads(payload)
    assert _Target.value is True
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        safe_unpickle(payload)


class _Target:
    value = False


def _storage_archive(tmp_path: Path, name: str, tensor: torch.Tensor) -> Path:
    path = tmp_path / name
    torch.save({"t": tensor}, path)
    return path


def _rewrite_pickle(archive: Path, old: bytes, new: bytes) -> None:
    """Replace the one match of regex `old` in data.pkl by `new`."""
    with zipfile.ZipFile(archive) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            if info.filename.endswith("/data.pkl"):
                data, n = re.subn(old, lambda _: new, data, flags=re.DOTALL)
                assert n == 1, (old, data)
            z.writestr(info, data)


def test_stride_zero_expansion_is_refused(tmp_path):
    """A 4-byte storage viewed as a huge tensor (the 1.6 TB W_enc of the red-team report) is refused."""
    path = _storage_archive(tmp_path, "w.pt", torch.ones(1).expand(3, 5))  # stride (0, 0), numel 15 > 1
    with pytest.raises(UnsafePickleError, match="expand"):
        restricted_torch_load(path)


def test_view_past_the_storage_is_refused(tmp_path):
    path = _storage_archive(tmp_path, "w.pt", torch.arange(6.0))
    # size (6,) -> (7,): BININT1 6 -> 7 inside the size tuple (K\x06\x85 = BININT1 6, TUPLE1)
    _rewrite_pickle(path, rb"K\x06\x85", b"K\x07\x85")
    with pytest.raises(UnsafePickleError, match="reach outside"):
        restricted_torch_load(path)


def test_declared_storage_size_must_match_the_record(tmp_path):
    path = _storage_archive(tmp_path, "w.pt", torch.arange(6.0))
    # persistent id ('storage', FloatStorage, '0', 'cpu', 6): numel 6 -> 200
    _rewrite_pickle(path, rb"(?<=cpuq.)K\x06t", b"K\xc8t")
    with pytest.raises(UnsafePickleError, match="declared"):
        restricted_torch_load(path)


@pytest.mark.parametrize(
    "program",
    [
        pickle.PROTO + b"\x02" + pickle.BINUNICODE + struct.pack("<I", 2**31) + b"abc",  # huge string length
        pickle.PROTO + b"\x04" + pickle.BINBYTES8 + struct.pack("<Q", 2**60),  # huge bytes length
        pickle.PROTO + b"\x02" + pickle.LONG4 + struct.pack("<i", 2**30),  # huge integer
    ],
)
def test_lengths_beyond_the_file_are_refused_before_allocating(program):
    with pytest.raises(UnsafePickleError, match="truncated"):
        safe_unpickle(program + pickle.STOP)


def test_bytearray_of_a_size_is_refused():
    program = _global("builtins", "bytearray") + pickle.MARK + pickle.BININT + struct.pack("<i", 2**31 - 1)
    with pytest.raises(UnsafePickleError, match="bytearray"):
        safe_unpickle(pickle.PROTO + b"\x02" + program + pickle.TUPLE + pickle.REDUCE + pickle.STOP)


def test_plain_values_round_trip():
    """Everything a config may hold comes back as itself (independent reference: pickle.dumps of the value)."""
    import numpy as np

    value = {
        "a": [1, -2, 2**70, 1.5, None, True, False],
        "b": ("x", b"\x00\xff", bytearray(b"ab"), {1, 2}, frozenset({3}), 2 + 3j, slice(1, 5, 2)),
        "c": collections.OrderedDict(k=torch.Size([2, 3])),
        "d": (torch.float16, torch.device("cpu")),
        "e": np.float64(0.25),
        "f": np.arange(6, dtype=np.int32).reshape(2, 3),
    }
    for protocol in (2, 4, 5):
        out = safe_unpickle(pickle.dumps(value, protocol=protocol))
        assert {k: out[k] for k in "abcd"} == {k: value[k] for k in "abcd"}
        assert out["e"] == value["e"] and out["e"].dtype == np.float64
        assert np.array_equal(out["f"], value["f"]) and out["f"].dtype == np.int32


def test_config_classes_load_as_plain_records():
    payload = (
        pickle.PROTO
        + b"\x02"
        + _global("vit_prisma.sae.config", "Cfg")
        + pickle.EMPTY_TUPLE
        + pickle.NEWOBJ
        + pickle.EMPTY_DICT
        + _text("d_in")
        + pickle.BININT1
        + b"\x10"
        + pickle.SETITEM
        + pickle.BUILD
        + pickle.STOP
    )
    obj = safe_unpickle(payload)
    assert isinstance(obj, PickledObject) and type(obj).__bases__ == (dict,)
    assert obj == {"d_in": 16} and obj.pickled_class == "vit_prisma.sae.config.Cfg"


def test_legacy_and_non_archives_are_refused_with_a_message(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"W": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickleError, match="legacy pickles are not read"):
        restricted_torch_load(legacy)


def test_weights_that_disagree_with_their_config_are_refused(tmp_path):
    folder = _sae_folder(tmp_path, "mismatch")
    cfg = {**_config(), "d_sae": D_SAE * 1000}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config says d_sae=32000 but the weights have 32"):
        load_prisma_sae(folder)
    bad_bias = {**_weights(), "b_dec": torch.zeros(D_IN + 1)}
    torch.save({"cfg": None, "state_dict": bad_bias}, folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(_config()))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        load_prisma_sae(folder)
