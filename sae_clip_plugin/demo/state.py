"""Resumable steps: a step whose marker file exists is skipped on a re-run.

Layout in the demo folder:

    demo_config.json     the settings of the run (a re-run with other settings is refused)
    state/<step>.json    written last, atomically, once the step's outputs are all in place

A step killed half-way has no marker, so the next run does it again; each step writes its own
outputs atomically (temporary name, then rename), and the slow ones (activation cache, training)
resume or replace partial work themselves.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sae_clip_plugin.atomic import atomic_write_json
from sae_clip_plugin.demo.config import DemoConfig

CONFIG_FILE = "demo_config.json"
STATE_DIR = "state"
# what `--force` may delete: only what the demo itself creates
OWNED = (STATE_DIR, CONFIG_FILE, "cache", "saes", "metrics", "steerability", "disentangle", "dashboard.html",
         "report.md", "report.html", "figures")  # fmt: skip


class SettingsMismatchError(RuntimeError):
    """The output folder holds a demo run made with other settings."""

    exit_code = 2  # fixed by a flag (--force, another --out): the CLI's bad-input status


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_json(path, data, default=str)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class DemoState:
    """The markers of a demo folder and the `step` runner that skips what is done."""

    def __init__(self, cfg: DemoConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.root = Path(cfg.out)
        self.log = log
        self.timings: dict[str, float] = {}  # wall seconds per step
        self.cpu_timings: dict[str, float] = {}  # CPU seconds per step (all threads)

    def open(self, force: bool = False) -> None:
        """Create the folder, or check that it holds a run with the same settings (`force`: start over)."""
        path = self.root / CONFIG_FILE
        if not path.is_file() and self.root.is_dir():
            foreign = sorted(name for name in OWNED if (self.root / name).exists())
            if foreign:
                raise SettingsMismatchError(
                    f"{self.root} holds {', '.join(foreign)} but no {CONFIG_FILE}, so no demo wrote them; nothing was "
                    "deleted. Choose another --out"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        if force and path.is_file():  # only a folder a demo wrote (its config proves it) is cleared
            for name in OWNED:
                target = self.root / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        if path.is_file():
            old = read_json(path)
            new = self.cfg.fingerprint()
            if old != new:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise SettingsMismatchError(
                    f"{self.root} holds a demo run made with other settings (differing: {', '.join(diff)}); "
                    "choose another --out, or pass --force to delete that run and start over"
                )
        else:
            write_json(path, self.cfg.fingerprint())

    def marker(self, step: str) -> Path:
        return self.root / STATE_DIR / f"{step}.json"

    def done(self, step: str) -> bool:
        return self.marker(step).is_file()

    def result(self, step: str) -> dict[str, Any]:
        """What a finished step recorded (its marker's `result`)."""
        return read_json(self.marker(step)).get("result", {})

    def step(
        self, name: str, title: str, fn: Callable[[], dict[str, Any]], index: int, total: int
    ) -> dict[str, Any]:
        """Run `fn` unless the step is marked done; its returned dict is stored in the marker."""
        head = f"[{index}/{total}] {title}"
        if self.done(name):
            record = read_json(self.marker(name))
            self.timings[name] = float(record.get("seconds", 0.0))
            if "cpu_seconds" in record:
                self.cpu_timings[name] = float(record["cpu_seconds"])
            self.log(f"{head}: done before, skipped ({self.marker(name)})")
            return record.get("result", {})
        self.log(f"{head} ...")
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        self.timings[name], self.cpu_timings[name] = seconds, cpu
        record = {
            "step": name,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "finished": time.time(),
            "result": result,
        }
        write_json(self.marker(name), record)
        self.log(f"{head}: {seconds:.1f} s ({cpu:.1f} s CPU)")
        return result
