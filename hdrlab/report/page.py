"""The self-contained ``index.html`` of ``hdrlab compare``: embedded stylesheet, a contents list,
one section per part. Wide tables scroll horizontally inside their own wrapper
(``div.table-wrap``) so the page itself never overflows; figures scale down to the page width.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hdrlab.report.figures import FigureInfo

STYLESHEET = """
:root { --fg: #1d232a; --muted: #5b6675; --line: #d9dee5; --head: #f2f4f7; --main: #eef4ff;
        --accent: #2458a6; --bad: #a3231a; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 28px 28px 64px; }
h1 { font-size: 1.65rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2.4rem 0 .7rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
p { margin: .4rem 0 .8rem; }
a { color: var(--accent); }
code { font: 0.88em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--head);
       padding: 1px 4px; border-radius: 3px; }
.meta { color: var(--muted); margin-bottom: 1rem; }
.summary { display: flex; flex-wrap: wrap; gap: 10px; margin: 1rem 0; padding: 0; list-style: none; }
.summary li { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; background: #fbfcfd; }
.summary b { font-size: 1.1rem; }
nav.toc { border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px; background: #fbfcfd; }
nav.toc ol { margin: .2rem 0; padding-left: 1.3rem; columns: 2; column-gap: 2rem; }
.table-wrap { display: inline-block; vertical-align: top; overflow-x: auto; max-width: 100%; margin: .5rem 0 .4rem;
              border: 1px solid var(--line);
              border-radius: 6px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; width: max-content; }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap;
         vertical-align: middle; }
thead th { background: var(--head); font-weight: 600; border-bottom: 2px solid #c4cbd4; }
thead th.region { font-weight: 500; color: var(--muted); font-size: 12.5px; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #f1f5fb; }
tbody tr:last-child th, tbody tr:last-child td { border-bottom: none; }
tbody th { font-weight: 500; }
.num { text-align: right; }
th.main, td.main { background: var(--main); }
thead th.main { background: #dce8fb; }
td.best strong { font-weight: 700; }
td.absent { color: var(--muted); font-style: italic; }
p.note { color: var(--muted); font-size: 13px; margin-top: .2rem; }
figure { margin: 1rem 0 1.8rem; }
figcaption { font-weight: 600; margin-bottom: .4rem; }
figcaption .links { font-weight: 400; font-size: 13px; margin-left: .5rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 4px 24px; }
.figs figure { margin: .6rem 0 1rem; }
ul.failures li { color: var(--bad); }
ul.failures code { color: var(--fg); }
ul.files { columns: 2; }
@media (max-width: 720px) { main { padding: 16px; } nav.toc ol, ul.files { columns: 1; }
                             .figs { grid-template-columns: 1fr; } }
"""


@dataclass
class Section:
    """One ``<section>``: anchor id, ``<h2>`` title, inner HTML."""

    id: str
    title: str
    body: str


def figure_html(fig: FigureInfo, folder: Path, *, caption: str = "") -> str:
    """A ``<figure>`` with its title as ``<figcaption>``, the PNG (alt = title) and a PDF link."""
    esc = html.escape
    src = fig.path.relative_to(folder).as_posix() if fig.path.is_relative_to(folder) else fig.path.name
    links = ""
    if fig.pdf is not None:
        pdf = fig.pdf.relative_to(folder).as_posix() if fig.pdf.is_relative_to(folder) else fig.pdf.name
        links = f"<span class='links'>(<a href='{esc(pdf)}'>PDF</a>)</span>"
    note = f"<p class='note'>{esc(caption)}</p>" if caption else ""
    return (f"<figure><figcaption>{esc(fig.title)}{links}</figcaption>"
            f"<img src='{esc(src)}' alt='{esc(fig.title)}' loading='lazy'>{note}</figure>")


def render_page(*, title: str, meta: str, summary: Sequence[tuple[str, str]], sections: Sequence[Section]) -> str:
    """The whole HTML document.

    Args:
        title: ``<title>`` and ``<h1>``.
        meta: A line under the title (escaped).
        summary: ``(value, label)`` chips under it.
        sections: The sections, in order (listed in the contents).
    """
    esc = html.escape
    chips = "".join(f"<li><b>{esc(v)}</b> {esc(k)}</li>" for v, k in summary)
    toc = "".join(f"<li><a href='#{esc(s.id)}'>{esc(s.title)}</a></li>" for s in sections)
    body = "\n".join(f"<section id='{esc(s.id)}'>\n<h2>{esc(s.title)}</h2>\n{s.body}\n</section>" for s in sections)
    return (
        "<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{esc(title)}</title>\n<style>{STYLESHEET}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{esc(title)}</h1>\n<p class='meta'>{esc(meta)}</p>\n"
        f"<ul class='summary'>{chips}</ul>\n"
        f"<nav class='toc' aria-label='contents'><ol>{toc}</ol></nav></header>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )
