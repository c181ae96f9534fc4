"""The report as data: sections of text, code, tables and figures, rendered to Markdown and HTML.

Builders produce this structure once; suites.report.markdown and suites.report.html render it,
so the two files always hold the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Text:
    """A paragraph (plain text; `backticks` mark code)."""

    text: str


@dataclasses.dataclass(frozen=True)
class Code:
    """A preformatted block (e.g. the suite definition)."""

    text: str


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """A table, written to tables/<name>.csv at full precision and shown rounded.

    Attributes:
        name: file stem of its CSV, unique in the report.
        caption: what it shows and which rows (metric, filter) it comes from.
        frame: the table.
    """

    name: str
    caption: str
    frame: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class Figure:
    """A PNG figure, written to figures/<name>.png and embedded in the HTML.

    Attributes:
        name: file stem, unique in the report.
        caption: what it shows and which rows it comes from.
        png: the image.
    """

    name: str
    caption: str
    png: bytes


Block = Text | Code | Table | Figure


@dataclasses.dataclass(frozen=True)
class Section:
    """A titled list of blocks.

    Attributes:
        title: heading text.
        blocks: its content, in order.
    """

    title: str
    blocks: tuple[Block, ...]

    @property
    def anchor(self) -> str:
        """The section's id in the HTML (lowercase, dashes)."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def cell_text(value: object) -> str:
    """One table cell as text: floats to 4 significant digits, NaN and None empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
