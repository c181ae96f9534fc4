"""The report as data: sections of text, code, tables and figures, rendered to Markdown and HTML.

Builders produce this structure once; suites.report.markdown and suites.report.html render it,
so the two files always hold the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

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


@dataclasses.dataclass(frozen=True, eq=False)
class Plot:
    """A figure still to be drawn: a suites.report.plots function and its arguments.

    Plain data (a module-level function, DataFrames, numbers), so that a worker process can draw
    it (suites.report.draw); ``draw()`` gives the same PNG bytes in any process.

    Attributes:
        kind: the drawing function, e.g. suites.report.plots.curves; returns PNG bytes.
        args: its positional arguments.
        kwargs: its keyword arguments.
    """

    kind: Callable[..., bytes]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, kind: Callable[..., bytes], *args: Any, **kwargs: Any) -> Plot:
        """``Plot.of(f, a, k=v)``: the figure ``f(a, k=v)`` draws."""
        return cls(kind, args, kwargs)

    def draw(self) -> bytes:
        """The PNG bytes of the figure."""
        return self.kind(*self.args, **self.kwargs)


@dataclasses.dataclass(frozen=True)
class Figure:
    """A PNG figure, written to figures/<name>.png and embedded in the HTML.

    Attributes:
        name: file stem, unique in the report.
        caption: what it shows and which rows it comes from.
        plot: how to draw it; suites.report.draw draws every figure once, possibly in a
            worker process, and the renderers take the images by name.
    """

    name: str
    caption: str
    plot: Plot


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
