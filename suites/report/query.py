"""Queries on the tidy rows: which rows a number comes from, and one number per run.

Every table in the report is built from a :class:`Selection` (protocol, metric, arm, step), so a
caption can say exactly which rows a number traces to.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pandas as pd

from suites.report.config import ReportConfig
from suites.report.metrics import MAIN_ARMS, MAIN_METRIC, spec

RUN_KEYS = ["task", "model", "arm", "seed"]
SINGLE_STEP = {("mpc", "return")}
"""(protocol, metric) pairs whose step is always 0, so it names no x-axis."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """A filter on the rows that yields one value per run.

    Attributes:
        protocol: rows' protocol.
        metric: rows' metric.
        arm: rows' arm (None: every arm).
        step: the step kept when the metric's summary is "last"; None for "post" / "mean".
    """

    protocol: str
    metric: str
    arm: str | None
    step: int | None

    def describe(self) -> str:
        """The filter in words, for captions."""
        parts = [f"protocol={self.protocol}", f"metric={self.metric}"]
        if self.arm is not None:
            parts.append(f"arm={self.arm}")
        summary = spec(self.metric).summary
        if self.step is not None and (self.protocol, self.metric) in SINGLE_STEP:
            parts.append(f"step={self.step}")
        elif self.step is not None:
            parts.append(f"step={self.step} ({spec(self.metric).step_label})")
        elif summary == "post":
            parts.append("mean over steps >= 0 per run")
        elif summary == "mean":
            parts.append("mean over steps per run")
        return ", ".join(parts)


def rows_of(rows: pd.DataFrame, protocol: str, metric: str, arm: str | None = None) -> pd.DataFrame:
    """Rows of one protocol and metric (and arm, when given)."""
    keep = (rows["protocol"] == protocol) & (rows["metric"] == metric)
    if arm is not None:
        keep &= rows["arm"] == arm
    return rows.loc[keep]


def select(rows: pd.DataFrame, protocol: str, metric: str, arm: str | None = None) -> Selection:
    """The selection of a metric at its summary step (the largest step for "last")."""
    sub = rows_of(rows, protocol, metric, arm)
    step = int(sub["step"].max()) if spec(metric).summary == "last" and len(sub) else None
    return Selection(protocol, metric, arm, step)


def main_selection(rows: pd.DataFrame, protocol: str) -> Selection | None:
    """The protocol's headline selection, None when its main metric has no rows."""
    metric = MAIN_METRIC.get(protocol)
    sub = rows_of(rows, protocol, metric) if metric else rows.iloc[:0]
    if metric is None or sub.empty:
        return None
    arms = sorted(sub["arm"].unique())
    arm = next((a for a in MAIN_ARMS if a in arms), arms[0])
    return select(rows, protocol, metric, arm)


def per_run(rows: pd.DataFrame, sel: Selection) -> pd.DataFrame:
    """One value per run (task, model, arm, seed) under ``sel``.

    Returns:
        DataFrame with RUN_KEYS + ["value"].
    """
    sub = rows_of(rows, sel.protocol, sel.metric, sel.arm)
    summary = spec(sel.metric).summary
    if sel.step is not None:
        sub = sub.loc[sub["step"] == sel.step]
    elif summary == "post":
        sub = sub.loc[sub["step"] >= 0]
    return sub.groupby(RUN_KEYS, as_index=False)["value"].mean()


def matrix(runs: pd.DataFrame, tasks: list[str]) -> np.ndarray:
    """The (runs, tasks) array of one model and arm; NaN where a task has fewer runs.

    Args:
        runs: output of :func:`per_run` filtered to one model and arm.
        tasks: column order.

    Shapes: -> (max runs per task, len(tasks)).
    """
    cols = [runs.loc[runs["task"] == t].sort_values("seed")["value"].to_numpy() for t in tasks]
    n = max((c.size for c in cols), default=0)
    out = np.full((n, len(tasks)), np.nan)
    for j, c in enumerate(cols):
        out[: c.size, j] = c
    return out


def paired(pre: pd.DataFrame, post: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two (runs, tasks) arrays whose rows are the same seeds, over the runs present in both.

    Returns:
        pre array, post array, and the tasks (columns) they cover; empty when no run pairs.
    """
    both = pre.merge(post, on=RUN_KEYS, suffixes=("_pre", "_post"))
    tasks = sorted(both["task"].unique())
    a = matrix(both.rename(columns={"value_pre": "value"}), tasks)
    b = matrix(both.rename(columns={"value_post": "value"}), tasks)
    return a, b, tasks


def rng_for(config: ReportConfig, *key: str) -> np.random.Generator:
    """A Generator for one interval: seeded by the config's seed and the interval's key."""
    return np.random.default_rng([config.seed, zlib.crc32("/".join(key).encode())])
