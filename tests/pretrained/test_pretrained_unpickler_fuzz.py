"""A seeded mutator over real Prisma files: every mutant loads or is refused with UnsafePickleError, quickly.

The seeds are files written by ViT-Prisma's own trainer (tests/pretrained/producers/prisma). Mutations act on
the pickle program (byte flips, opcode insertions, deletions, duplicated ranges, truncation: the edits a
hostile uploader makes) and on the archive's bytes. Bound: each load takes under a second (the files are a
few hundred KB), no exception other than UnsafePickleError escapes, and no process crash.
"""

from __future__ import annotations

import pickletools
import random
import time
import zipfile
from pathlib import Path

import pytest

from sae_clip_plugin.pretrained.unpickler import UnsafePickleError, restricted_torch_load

PRODUCED = Path(__file__).parent / "producers" / "prisma"
SEEDS = sorted(PRODUCED.glob("*/n_images_2600058.pt"))
# opcodes a mutant may gain: every one the pickle format has, so the rarely used ones are reached too
OPCODES = sorted({bytes([op.code.encode("latin-1")[0]]) for op in pickletools.opcodes})
CASES_PER_SEED = 500


def _mutate_program(program: bytes, rng: random.Random) -> bytes:
    data = bytearray(program)
    for _ in range(rng.randint(1, 4)):
        if len(data) < 4:
            break
        where = rng.randrange(2, len(data))  # keep PROTO
        kind = rng.randrange(5)
        if kind == 0:
            data[where] = rng.randrange(256)
        elif kind == 1:
            data[where:where] = rng.choice(OPCODES) + bytes(
                rng.randrange(256) for _ in range(rng.randrange(4))
            )
        elif kind == 2:
            del data[where : where + rng.randint(1, 16)]
        elif kind == 3:
            start = rng.randrange(2, len(data))
            data[where:where] = data[start : start + rng.randint(1, 64)] * rng.randint(1, 8)
        else:
            del data[where:]
    return bytes(data)


def _rewrite(seed: Path, target: Path, program: bytes) -> None:
    with zipfile.ZipFile(seed) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            z.writestr(info, program if info.filename.endswith("/data.pkl") else data)


def _program(seed: Path) -> bytes:
    with zipfile.ZipFile(seed) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def _load_within_bound(path: Path) -> str:
    start = time.perf_counter()
    try:
        restricted_torch_load(path)
        outcome = "loaded"
    except UnsafePickleError:
        outcome = "refused"
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{path.name}: {elapsed:.2f} s"
    return outcome


def test_there_are_producer_seeds():
    assert len(SEEDS) == 5  # vanilla, topk_cls, topk_patches, transcoder, transcoder_relu


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.parent.name)
def test_mutated_pickle_programs_load_or_are_refused(seed, tmp_path):
    rng = random.Random(f"program:{seed.parent.name}")
    program = _program(seed)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(CASES_PER_SEED):
        path = tmp_path / f"mutant{i}.pt"
        _rewrite(seed, path, _mutate_program(program, rng))
        outcomes[_load_within_bound(path)] += 1
        path.unlink()
    assert outcomes["refused"] > 0  # the mutator does reach the checks


@pytest.mark.parametrize("seed", SEEDS[:1], ids=lambda p: p.parent.name)
def test_mutated_archive_bytes_load_or_are_refused(seed, tmp_path):
    rng = random.Random("archive")
    original = seed.read_bytes()
    for i in range(CASES_PER_SEED):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)) :]
        path = tmp_path / f"mutant{i}.pt"
        path.write_bytes(bytes(data))
        _load_within_bound(path)
        path.unlink()
