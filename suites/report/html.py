"""Rendering a report document to one self-contained HTML file.

Figures are embedded as base64 data URIs and the CSS is inline: the file opens with no network
and links to nothing outside itself (only #anchors of its own sections).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from html import escape

import numpy as np

from suites.report.document import Code, Figure, Section, Table, Text, cell_text

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
nav ol { columns: 2; font-size: .92rem; }
table { border-collapse: collapse; margin: .4rem 0 1.4rem; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .2rem .55rem; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
p.caption { font-style: italic; color: #444; font-size: .92rem; margin: 1.2rem 0 .2rem; }
figure { margin: 1rem 0 1.8rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-style: italic; color: #444; font-size: .92rem; }
pre { background: #f6f8fa; padding: .7rem; overflow-x: auto; font-size: .85rem; }
code { background: #f6f8fa; padding: 0 .2rem; }
.scroll { overflow-x: auto; }
"""


def _text(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _cell(value: object) -> str:
    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    attr = ' class="num"' if numeric else ""
    return f"<td{attr}>{escape(cell_text(value))}</td>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in table.frame.columns)
    body = "".join(
        "<tr>" + "".join(_cell(v) for v in row) + "</tr>"
        for row in table.frame.itertuples(index=False)
    )
    caption = f"Table ({escape(table.name)}): {_text(table.caption)}"
    # The caption sits above the table, not in a <caption>, which would wrap to the table's width.
    return (
        f'<div class="scroll" id="table-{escape(table.name)}"><p class="caption">{caption}'
        f"</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _figure(fig: Figure, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="figure-{escape(fig.name)}"><img alt="{escape(fig.name)}" '
        f'src="data:image/png;base64,{data}"><figcaption>Figure ({escape(fig.name)}): '
        f"{_text(fig.caption)}</figcaption></figure>"
    )


def render_html(title: str, sections: list[Section], images: Mapping[str, bytes]) -> str:
    """The whole report as one HTML document; ``images`` holds each figure's PNG by name."""
    toc = "".join(f'<li><a href="#{s.anchor}">{escape(s.title)}</a></li>' for s in sections)
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"<nav><ol>{toc}</ol></nav>"
    ]
    for section in sections:
        parts.append(f'<section id="{section.anchor}"><h2>{escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{_text(block.text)}</p>")
            elif isinstance(block, Code):
                parts.append(f"<pre>{escape(block.text)}</pre>")
            elif isinstance(block, Table):
                parts.append(_table(block))
            elif isinstance(block, Figure):
                parts.append(_figure(block, images[block.name]))
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
