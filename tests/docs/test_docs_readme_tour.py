"""The README's Tour runs as written on the bundled toy CLIP (the first python block under "## Tour")."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def tour_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Tour") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.usefixtures("one_thread")
def test_the_readme_tour_runs_and_prints_the_shapes_it_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = tour_code()
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)  # the README's own code, as a reader runs it
    shapes, classes = printed.getvalue().splitlines()[:2], printed.getvalue().splitlines()[2:]
    assert shapes == ["torch.Size([8, 65, 128])", "torch.Size([8, 65, 512])"]
    before, after = (json.loads(side) for side in classes[0].split(" -> "))  # the printed class indices
    assert (
        len(before) == len(after) == 8 and before != after
    )  # steering one feature visibly changed predictions
    # the comments state these shapes too
    assert "[8, 65, 128]" in code and "[8, 65, 512]" in code
    assert tuple(namespace["logits"].shape) == (8, 6) and tuple(namespace["emb"].shape) == (8, 128)
    assert (tmp_path / "out" / "tour" / "sae" / "cfg.json").is_file()
    assert not (namespace["steered"] - namespace["emb"]).abs().max() < 1e-6  # steering changed the output
    assert os.listdir(tmp_path) == ["out"]  # nothing stray (no ./checkpoints)
