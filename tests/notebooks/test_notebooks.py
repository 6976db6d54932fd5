"""Every notebook in notebooks/ runs top to bottom offline on the toy CLIP, is stored without outputs, and has an
executed copy in docs/notebooks/ (docs/render_notebooks.py).

Each runs in its own python3 kernel (jupyter_client starts it with this interpreter) with HF_HUB_OFFLINE=1,
in a temporary working folder.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from sae_clip_plugin.toy import WEIGHTS_PATH

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {
    "01_quickstart",
    "02_train_sae",
    "03_pretrained_sae",
    "04_metrics",
    "05_steering",
    "06_disentanglement",
    "07_decomposition",
}


def test_the_notebooks_are_there_and_stored_without_outputs():
    assert {p.stem for p in NOTEBOOKS} == EXPECTED
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, f"{path.name} has no code"
        assert all(not c.outputs and c.execution_count is None for c in code), (
            f"{path.name} is stored with outputs"
        )


@pytest.mark.skipif(not WEIGHTS_PATH.is_file(), reason="the bundled toy CLIP weights are not built yet")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_offline(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert shown, f"{path.name} displayed nothing"


def test_the_rendered_copies_in_docs_show_outputs_of_the_current_code():
    """docs/notebooks/ holds each notebook executed (what readers see); its code must be the notebook's."""
    rendered = NOTEBOOK_DIR.parent / "docs" / "notebooks"
    for path in NOTEBOOKS:
        copy = rendered / path.name
        assert copy.is_file(), f"docs/notebooks/{path.name} is missing: run python docs/render_notebooks.py"
        source = [c.source for c in nbformat.read(path, as_version=4).cells]
        shown = nbformat.read(copy, as_version=4)
        assert [c.source for c in shown.cells] == source, (
            f"docs/notebooks/{path.name} is out of date: run python docs/render_notebooks.py {path.name[:2]}"
        )
        outputs = [o for c in shown.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs and not [o for o in outputs if o.output_type == "error"], path.name
