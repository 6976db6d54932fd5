"""report.md and report.html from one Report: tables, inline marks, embedded figures, atomic writes."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
from PIL import Image

from sae_clip_plugin.tables import format_value
from sae_clip_plugin.viz.report import FigureRef, Report, Section, Table, inline_html


def test_format_value():
    assert format_value(0.123456, 3) == "0.123"
    assert format_value(float("nan")) == "" and format_value(None) == ""
    assert format_value(True) == "yes" and format_value(np.bool_(False)) == "no"
    assert format_value(np.float32(2.5)) == "2.500" and format_value(7) == "7"
    # one format per column kind: ratios to 3 decimals (1.000 beside 0.917), big values to one decimal
    assert [format_value(v) for v in (1.0, 0.91666, -0.26923, 103.14, 16384.0)] == [
        "1.000", "0.917", "-0.269", "103.1", "16384.0"
    ]  # fmt: skip


def test_inline_marks_are_escaped_and_rendered():
    text = "see `a<b` and **bold** in [the page](dash.html?x=1&y=2) & more"
    assert inline_html(text) == (
        'see <code>a&lt;b</code> and <b>bold</b> in <a href="dash.html?x=1&amp;y=2">the page</a> &amp; more'
    )


def test_report_markdown_and_html(tmp_path):
    Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(tmp_path / "fig.png")
    frame = pd.DataFrame({"name": ["a", "b"], "ev": [0.91234, math.nan], "l0": [3, 4]})
    report = Report("Demo", intro=["Model `toy`."])
    report.add(Section("Metrics", text=["Numbers **here**."], tables=[Table.from_frame(frame, ["name", "ev", "zz"])],
                       figures=[FigureRef("fig.png", "a figure"), FigureRef("missing.png")]))  # fmt: skip
    md_path, html_path = report.write(tmp_path)

    md = md_path.read_text()
    assert md.startswith("# Demo\n")
    assert "| name | ev |\n|---|---|\n| a | 0.912 |\n| b |  |" in md  # unknown column dropped, NaN empty
    assert "![a figure](fig.png)" in md and "## Metrics" in md

    page = html_path.read_text()
    png = (tmp_path / "fig.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert "(figure missing.png is missing)" in page
    assert (
        "<td>0.912</td>" in page
        and "table-wrap" in page
        and "<code>toy</code>" in page
        and "<b>here</b>" in page
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
