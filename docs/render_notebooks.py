"""Execute every notebook in notebooks/ offline on the toy CLIP and store the executed copy in docs/notebooks/.

The notebooks themselves stay without outputs (small diffs; the test suite executes them); the copies here show
the outputs where people read them (GitHub renders .ipynb). A test checks that each copy has the same code as
its notebook, so rerun this after editing a notebook:

    python docs/render_notebooks.py            # all notebooks, about 5 minutes on 2 CPU cores
    python docs/render_notebooks.py 07         # the notebooks whose name starts with 07
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOURCE, TARGET = ROOT / "notebooks", ROOT / "docs" / "notebooks"


def render(path: Path) -> Path:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as work:  # the notebooks write their outputs under out/ in the cwd
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
    for cell in nb.cells:  # outputs kept; run metadata (timings) dropped so reruns diff cleanly
        cell.metadata.pop("execution", None)
    target = TARGET / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)
    return target


def main(prefixes: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for path in sorted(SOURCE.glob("*.ipynb")):
        if prefixes and not any(path.name.startswith(p) for p in prefixes):
            continue
        print(f"rendering {path.name} ...", flush=True)
        print(f"wrote {render(path).relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
