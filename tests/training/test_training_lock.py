"""The folder lock under near-simultaneous starts: never two holders, with or without a dead holder's lock."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from sae_clip_plugin.locking import LOCK_NAME, FolderLockedError, folder_lock

N_PROCESSES = 12


def _contend(folder: str, start_at: float, log: str, index: int) -> None:
    while time.time() < start_at:  # all start within a millisecond or so
        pass
    try:
        with folder_lock(folder, "test folder"):
            entered = time.time()
            time.sleep(0.2)
            left = time.time()
        outcome = {"held": [entered, left]}
    except FolderLockedError as err:
        outcome = {"refused": str(err)}
    Path(log, f"{index}.json").write_text(json.dumps(outcome))


def _run_contenders(tmp_path: Path) -> list[dict]:
    logs = tmp_path / "logs"
    logs.mkdir()
    ctx = multiprocessing.get_context("fork")
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(target=_contend, args=(str(tmp_path / "folder"), start_at, str(logs), i))
        for i in range(N_PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return [json.loads(path.read_text()) for path in logs.iterdir()]


def _assert_one_holder_at_a_time(outcomes: list[dict]) -> None:
    held = sorted(o["held"] for o in outcomes if "held" in o)
    assert held, outcomes
    for (_, left), (entered, _) in itertools.pairwise(held):
        assert entered >= left, f"two holders at once: {held}"
    for o in outcomes:
        if "refused" in o:
            assert "is being written by process" in o["refused"]


@pytest.mark.parametrize("round_", range(3))
def test_near_simultaneous_starts_never_share_the_lock(tmp_path, round_):
    _assert_one_holder_at_a_time(_run_contenders(tmp_path))


@pytest.mark.parametrize("round_", range(3))
def test_near_simultaneous_takeovers_of_a_dead_holders_lock(tmp_path, round_):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 7, "host": _host(), "started": "earlier"}))
    outcomes = _run_contenders(tmp_path)
    _assert_one_holder_at_a_time(outcomes)
    assert not (folder / LOCK_NAME).exists()


def _host() -> str:
    import socket

    return socket.gethostname()
