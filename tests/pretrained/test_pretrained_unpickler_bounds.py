"""The checkpoint reader's bounds: what torch.save writes loads, and a small crafted file costs little.

Each crafted file below is a few KB (or a few hundred KB of one repeated opcode) and used to crash the
process (a deep tuple hashed as a dict key), take exponential time (shared references unfolded), or grow
memory by a multiple of its size (one storage rebuilt per reference). Each must now be refused with
UnsafePickleError, or load as cheaply as `torch.load` would, in time and memory proportional to the file.
"""

from __future__ import annotations

import collections
import pickle
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

from sae_clip_plugin.pretrained.unpickler import (
    MAX_DEPTH,
    UnsafePickleError,
    restricted_torch_load,
    safe_unpickle,
)


def _archive(path: Path, program: bytes) -> Path:
    """A torch.save-style zip holding `program` as data.pkl (no storages)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", program)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def _program(body: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + body + pickle.STOP


# ---------------------------------------------------------------- the Prisma regression (issue: every file refused)


def test_a_module_state_dict_loads_with_its_version_metadata(tmp_path):
    """torch.save(module.state_dict()) pickles the OrderedDict's `_metadata` with a BUILD: Prisma saves this way."""
    linear = torch.nn.Linear(4, 3)
    torch.save({"state_dict": linear.state_dict(), "cfg": {"d_in": 4}}, tmp_path / "sd.pt")
    loaded = restricted_torch_load(tmp_path / "sd.pt")
    assert loaded["cfg"] == {"d_in": 4}
    assert type(loaded["state_dict"]) is collections.OrderedDict
    for name, value in linear.state_dict().items():
        assert torch.equal(loaded["state_dict"][name], value)
    assert loaded["state_dict"]._metadata == linear.state_dict()._metadata  # {"": {"version": 1}}
    torch.nn.Linear(4, 3).load_state_dict(loaded["state_dict"])  # usable as a state dict


def test_a_nested_module_state_dict_loads(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    torch.save(model.state_dict(), tmp_path / "m.pt")
    loaded = restricted_torch_load(tmp_path / "m.pt")
    assert loaded._metadata == model.state_dict()._metadata
    assert set(loaded) == set(model.state_dict())


def _ordered_dict() -> bytes:
    return pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.EMPTY_TUPLE + pickle.REDUCE


def _text(s: str) -> bytes:
    raw = s.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def _metadata_entry(value: bytes) -> bytes:
    """OrderedDict([("", {"version": <value>})])"""
    return (
        _ordered_dict()
        + _text("")
        + pickle.EMPTY_DICT
        + _text("version")
        + value
        + pickle.SETITEM
        + pickle.SETITEM
    )


METADATA_BUILDS = {
    # exactly what torch writes: accepted (the control)
    "torch's own": (
        pickle.EMPTY_DICT + _text("_metadata") + _metadata_entry(b"K\x01") + pickle.SETITEM,
        None,
    ),
    "an extra attribute": (
        pickle.EMPTY_DICT
        + _text("_metadata")
        + _metadata_entry(b"K\x01")
        + pickle.SETITEM
        + _text("__class__")
        + pickle.NONE
        + pickle.SETITEM,
        "OrderedDict",
    ),
    "another attribute name": (
        pickle.EMPTY_DICT + _text("__dict__") + _metadata_entry(b"K\x01") + pickle.SETITEM,
        "OrderedDict",
    ),
    "a global as a version": (
        pickle.EMPTY_DICT
        + _text("_metadata")
        + _metadata_entry(pickle.GLOBAL + b"torch\nSize\n")
        + pickle.SETITEM,
        "metadata",
    ),
    "a plain dict of metadata": (
        pickle.EMPTY_DICT + _text("_metadata") + pickle.EMPTY_DICT + pickle.SETITEM,
        "OrderedDict",
    ),
    "a (dict, slots) pair": (
        pickle.NONE
        + pickle.EMPTY_DICT
        + _text("_metadata")
        + _metadata_entry(b"K\x01")
        + pickle.SETITEM
        + pickle.TUPLE2,
        "OrderedDict",
    ),
}


@pytest.mark.parametrize("case", list(METADATA_BUILDS))
def test_only_torchs_own_state_dict_metadata_is_built(case):
    state, refusal = METADATA_BUILDS[case]
    program = _program(_ordered_dict() + state + pickle.BUILD)
    if refusal is None:
        assert safe_unpickle(program)._metadata == {"": {"version": 1}}
    else:
        with pytest.raises(UnsafePickleError, match=refusal):
            safe_unpickle(program)


def test_metadata_is_built_once():
    state = pickle.EMPTY_DICT + _text("_metadata") + _metadata_entry(b"K\x01") + pickle.SETITEM
    with pytest.raises(UnsafePickleError, match="OrderedDict"):
        safe_unpickle(_program(_ordered_dict() + state + pickle.BUILD + state + pickle.BUILD))


def test_metadata_is_not_built_on_a_plain_dict():
    state = pickle.EMPTY_DICT + _text("_metadata") + _metadata_entry(b"K\x01") + pickle.SETITEM
    with pytest.raises(UnsafePickleError, match="setting the state of a dict"):
        safe_unpickle(_program(pickle.EMPTY_DICT + state + pickle.BUILD))


# ---------------------------------------------------------------- crashes and blow-ups from small files


def _deep_tuple_key(depth: int) -> bytes:
    """{((((...)))): None}: hashing the key recurses `depth` levels in C (no recursion check in CPython)."""
    return _program(
        pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * depth + pickle.NONE + pickle.SETITEM
    )


def test_a_deep_tuple_key_is_refused_in_a_subprocess(tmp_path):
    """200 KB: the process segfaulted (exit 139) hashing the key. Now a refusal, the process alive."""
    path = _archive(tmp_path / "deep.pt", _deep_tuple_key(200_000))
    code = textwrap.dedent(
        f"""
        from sae_clip_plugin.pretrained.unpickler import UnsafePickleError, restricted_torch_load
        try:
            restricted_torch_load({str(path)!r})
        except UnsafePickleError as err:
            print("refused:", err)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused:" in done.stdout and f"nested more than {MAX_DEPTH} deep" in done.stdout


def test_tuples_nested_to_the_bound_still_load():
    loaded = safe_unpickle(_program(pickle.EMPTY_TUPLE + pickle.TUPLE1 * (MAX_DEPTH - 1)))
    depth = 0
    while loaded:
        loaded, depth = loaded[0], depth + 1
    assert depth == MAX_DEPTH - 1


def _shared_dag(levels: int, container: type) -> object:
    node: object = container()
    for _ in range(levels):
        node = container([node, node])  # two references to one child: 2**levels leaves once unfolded
    return node


@pytest.mark.parametrize(("where", "container"), [("value", tuple), ("value", list), ("key", tuple)])
def test_shared_references_do_not_unfold_exponentially(where, container):
    """pickle memoises shared objects: 60 levels are a ~1 KB file and 2**60 nodes unfolded (never ended)."""
    dag = pickle.dumps(_shared_dag(60, container), protocol=2)[2:-1]  # the program without PROTO and STOP
    if where == "value":
        program = _program(pickle.EMPTY_DICT + _text("cfg") + dag + pickle.SETITEM)
    else:  # {dag: 1}, which Python itself could not even build (hashing it never ends)
        program = _program(pickle.EMPTY_DICT + dag + pickle.NONE + pickle.SETITEM)
    assert len(program) < 2_000
    start = time.perf_counter()
    with pytest.raises(UnsafePickleError, match=r"shared references unfold|dict key or set item"):
        safe_unpickle(program)
    assert time.perf_counter() - start < 2.0


def test_small_shared_structures_keep_their_sharing():
    leaf = ("a", 1)
    loaded = safe_unpickle(pickle.dumps({"x": [leaf, leaf], "y": leaf}, protocol=2))
    assert loaded == {"x": [leaf, leaf], "y": leaf}
    assert loaded["x"][0] is loaded["x"][1] is loaded["y"]


def test_a_self_containing_list_is_refused():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(UnsafePickleError, match="contains itself"):
        safe_unpickle(pickle.dumps({"cfg": cyclic}, protocol=2))


def test_a_deep_list_is_refused_not_a_recursion_error():
    """Lists nest without hashing; the walk after the load used to raise RecursionError."""
    assert safe_unpickle(_program(pickle.EMPTY_LIST * 3 + pickle.APPEND * 2)) == [[[]]]  # control
    body = pickle.EMPTY_LIST * 50_001 + pickle.APPEND * 50_000  # [[[...]]] 50,000 deep
    with pytest.raises(UnsafePickleError, match="nested"):
        safe_unpickle(_program(body))


def test_one_storage_named_many_times_is_read_once(tmp_path):
    """Every tensor rebuild used to clone its storage: 1000 views of 1 MB cost 1 GB. Now views share it."""
    base = torch.arange(256 * 1024, dtype=torch.float32)
    views = [base[i:] for i in range(1000)]  # 1000 tensors over one storage
    torch.save({"views": views}, tmp_path / "shared.pt")
    size = (tmp_path / "shared.pt").stat().st_size
    assert size < 2 * base.numel() * 4  # the file holds the storage once
    loaded = restricted_torch_load(tmp_path / "shared.pt")["views"]
    assert len({t.untyped_storage().data_ptr() for t in loaded}) == 1
    assert torch.equal(loaded[999], base[999:])
    loaded[0][1] = -1.0  # writable, and shared as torch.load shares it
    assert loaded[1][0] == -1.0


def test_loaded_tensors_are_writable_and_independent_of_the_file(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "w.pt")
    w = restricted_torch_load(tmp_path / "w.pt")["w"]
    w.add_(1)
    assert torch.equal(restricted_torch_load(tmp_path / "w.pt")["w"], torch.ones(3))


def test_a_lazy_torch_submodule_is_refused_by_name_without_importing_it():
    """GLOBAL torch._inductor used to import 139 modules (getattr on torch) before the refusal."""
    code = textwrap.dedent(
        """
        import pickle, sys
        from sae_clip_plugin.pretrained.unpickler import UnsafePickleError, safe_unpickle
        before = set(sys.modules)
        try:
            safe_unpickle(pickle.PROTO + b"\\x02" + pickle.GLOBAL + b"torch\\n_inductor\\n" + pickle.STOP)
        except UnsafePickleError as err:
            print("refused:", err)
        print("new modules:", sorted(m for m in set(sys.modules) - before if m.startswith("torch")))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused:" in done.stdout and "torch._inductor" in done.stdout, done.stderr[-2000:]
    assert "new modules: []" in done.stdout


def test_text_opcodes_are_read_in_linear_time():
    """readline copied the rest of the program for every text opcode: quadratic in the file."""
    body = pickle.MARK + b"I1\n" * 200_000 + pickle.LIST
    start = time.perf_counter()
    assert len(safe_unpickle(_program(body))) == 200_000
    assert time.perf_counter() - start < 5.0
