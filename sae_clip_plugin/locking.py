"""One writer per folder: a lock file naming its holder (pid, host), taken over when that process is gone.

Why: two processes writing the same activation cache clean each other's temporary files and die half-way
with errors from deep inside `datasets`; the second one should be told who is writing, and a lock left by a
killed process must not block the folder forever.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"
ATTEMPTS = 100  # tries to take the lock while dead holders' locks are being cleared
TAKEOVER_SECONDS = 10.0  # a takeover marker older than this was left by a killed process


class FolderLockedError(RuntimeError):
    """Another live process is writing the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _try_create(lock: Path, record: dict) -> bool:
    """Create `lock` holding `record`, atomically: no other process ever sees it empty or half-written.

    The record is written to a private file first and hard-linked to the lock name (link fails if the name
    exists); an O_EXCL create followed by a write let a second process read an empty lock, take it for a
    dead one's and hold the folder too.
    """
    fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_NAME}.new-", dir=lock.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, lock)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


@contextmanager
def _takeover_turn(lock: Path) -> Iterator[bool]:
    """One process at a time replaces a dead holder's lock (else two could each remove the other's new one)."""
    turn = lock.with_name(lock.name + ".takeover")
    try:
        if time.time() - turn.stat().st_mtime > TAKEOVER_SECONDS:  # left by a process killed mid-takeover
            turn.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(turn, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        yield False
        return
    try:
        yield True
    finally:
        turn.unlink(missing_ok=True)


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold `<folder>/.lock` while the block runs; refuse if a live process holds it, take over a dead one's."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(ATTEMPTS):
        if _try_create(lock, record):
            break
        holder = _read(lock)
        pid, host = holder.get("pid"), holder.get("host")
        if host == record["host"] and isinstance(pid, int) and _alive(pid) and pid != os.getpid():
            raise FolderLockedError(
                f"the {what} at {folder} is being written by process {pid} on {host} (since {holder.get('started')}); "
                f"wait for it to finish, or stop it first. If no such process runs, delete {lock}"
            )
        if host not in (None, record["host"]):
            raise FolderLockedError(
                f"the {what} at {folder} is locked by process {pid} on another machine, {host} (since "
                f"{holder.get('started')}); if that run is over, delete {lock}"
            )
        # a lock left by a process that is gone: remove it (if it is still that one), then try again
        with _takeover_turn(lock) as mine:
            if mine and _read(lock) == holder:
                lock.unlink(missing_ok=True)
        if not mine:
            time.sleep(0.05)
    else:
        raise FolderLockedError(f"could not take the lock {lock}; another process keeps taking it")
    try:
        yield lock
    finally:
        if _read(lock).get("pid") == record["pid"]:
            lock.unlink(missing_ok=True)
