"""A report written twice from one structure: report.md (figures linked) and report.html (figures embedded).

    report = Report("SAE demo", intro=["..."])
    report.add(Section("Metrics", text=["..."], tables=[Table(header, rows)], figures=[FigureRef("metrics/x.png")]))
    report.write(out_dir)        # out_dir/report.md + out_dir/report.html, atomically

Paragraphs understand three inline marks, rendered in both formats: `code`, **bold** and [text](link).
Figure paths are relative to the report's folder; the HTML page embeds them as base64 PNG so it can be
opened or sent on its own.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_clip_plugin.atomic import atomic_write_text
from sae_clip_plugin.tables import column_cells, markdown_table
from sae_clip_plugin.viz.dashboard_html import data_uri, page

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def inline_html(text: str) -> str:
    """Escape `text` and render its inline marks as HTML."""
    out, last = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[last : m.start()]))
        code, bold, label, href = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<b>{html.escape(bold)}</b>")
        else:
            out.append(f'<a href="{html.escape(href)}">{html.escape(label)}</a>')
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""
    digits: int = 3

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        columns: Sequence[str] | None = None,
        caption: str = "",
        digits: int = 3,
        headers: dict[str, str] | None = None,
    ) -> Table:
        """From a pandas DataFrame (only `columns` that exist, in that order; `headers` renames them)."""
        cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
        rows = [list(r) for r in frame[cols].itertuples(index=False)]
        return cls([(headers or {}).get(c, c) for c in cols], rows, caption, digits)

    def cells(self) -> list[list[str]]:
        return column_cells(self.rows, self.digits)

    def markdown(self) -> str:
        caption = f"**{self.caption}**\n\n" if self.caption else ""
        return caption + markdown_table(self.header, self.rows, self.digits)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.cells()
        )
        caption = f"<caption>{inline_html(self.caption)}</caption>" if self.caption else ""
        table = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return (
            f'<div class="table-wrap">{table}</div>'  # a wide table scrolls instead of running off the page
        )


@dataclass
class FigureRef:
    path: str  # relative to the report folder
    caption: str = ""


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)
    after: list[str] = field(default_factory=list)  # paragraphs after tables and figures


REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; color: #222; max-width: 1100px; padding: 0 1em; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0 1.2em 0; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
td, th { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
th { background: #f4f4f4; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .85em; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


@dataclass
class Report:
    title: str
    intro: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    def to_markdown(self) -> str:
        parts = [f"# {self.title}", "", *[p + "\n" for p in self.intro]]
        for s in self.sections:
            parts += [f"## {s.title}", ""]
            parts += [p + "\n" for p in s.text]
            for table in s.tables:
                parts += [table.markdown(), ""]
            for fig in s.figures:
                parts += [f"![{fig.caption or Path(fig.path).stem}]({fig.path})", ""]
                if fig.caption:
                    parts += [f"*{fig.caption}*", ""]
            parts += [p + "\n" for p in s.after]
        return "\n".join(parts).rstrip() + "\n"

    def to_html(self, base: str | os.PathLike) -> str:
        """The page with every figure under `base` embedded (a missing figure is named, not fatal)."""
        base = Path(base)
        body = [f"<h1>{html.escape(self.title)}</h1>", *[f"<p>{inline_html(p)}</p>" for p in self.intro]]
        for s in self.sections:
            anchor = re.sub(r"[^a-z0-9]+", "-", s.title.lower()).strip("-")  # report.html#disentanglement
            body.append(f'<h2 id="{anchor}">{html.escape(s.title)}</h2>')
            body += [f"<p>{inline_html(p)}</p>" for p in s.text]
            body += [t.html() for t in s.tables]
            for fig in s.figures:
                path = base / fig.path
                caption = f"<figcaption>{inline_html(fig.caption)}</figcaption>" if fig.caption else ""
                if path.is_file():
                    img = f'<img src="{data_uri(path.read_bytes())}" alt="{html.escape(fig.caption or path.stem)}">'
                else:
                    img = f"<p>(figure {html.escape(fig.path)} is missing)</p>"
                body.append(f"<figure>{img}{caption}</figure>")
            body += [f"<p>{inline_html(p)}</p>" for p in s.after]
        return page(self.title, "\n".join(body)).replace("</style>", REPORT_STYLE + "</style>", 1)

    def write(self, out_dir: str | os.PathLike, stem: str = "report") -> tuple[Path, Path]:
        """Write `<stem>.md` and `<stem>.html` into `out_dir` (atomically); returns both paths."""
        out = Path(out_dir)
        md = atomic_write_text(out / f"{stem}.md", self.to_markdown())
        page_path = atomic_write_text(out / f"{stem}.html", self.to_html(out))
        return md, page_path
