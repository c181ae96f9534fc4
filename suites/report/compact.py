"""Compact per-protocol tables: a few (metric, arm, step) columns, one line per task and model.

    python -m suites.report.compact results/quick/<run>     # the README's quick-suite tables

Each cell is "IQM [low, high]" over the seeds of one task, model and arm, with the 95%
bootstrap interval of the report's per-task tables (same estimator, same generator key, so a
column at a metric's summary step prints the report's numbers); with 3 seeds the IQM is the mean.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from suites.report import stats
from suites.report.config import ReportConfig
from suites.report.load import load_run
from suites.report.query import Selection, per_run, rng_for, select

Column = tuple[str, str, int | None]
"""(metric, arm, step); step None: the metric's own summary (last step, or mean over steps)."""

COLUMNS: dict[str, list[Column]] = {
    "dynamics": [
        ("query_mse", "maml", 0),
        ("query_mse", "maml", 3),
        ("query_mse", "pretrain", 3),
        ("online_mse", "maml", None),
        ("online_mse", "maml+adapter", None),
    ],
    "policy": [("return", "maml", 0), ("return", "maml", 1), ("return", "maml", 3), ("return", "pretrain", 3)],
    "mpc": [("return", arm, None) for arm in ("unadapted", "maml", "maml+adapter", "oracle", "random")],
}


def _header(protocol: str, column: Column) -> str:
    metric, arm, step = column
    return f"{protocol} {metric}, {arm}" + ("" if step is None else f" k={step}")


def compact_table(rows: pd.DataFrame, protocol: str, columns: list[Column], config: ReportConfig) -> pd.DataFrame:
    """One protocol's table: task, model, then one "IQM [low, high]" string per column.

    Args:
        rows: the run's tidy rows.
        protocol: whose rows.
        columns: (metric, arm, step) per column; columns without rows are left out.
        config: bootstrap repetitions, confidence and seed (the report's defaults).
    """
    out: dict[tuple[str, str], dict[str, str]] = {}
    for column in columns:
        metric, arm, step = column
        summary = select(rows, protocol, metric, arm)
        sel = summary if step is None else Selection(protocol, metric, arm, step)
        runs = per_run(rows, sel)
        key_extra = () if sel == summary else (f"step={step}",)
        for (task, model), grp in runs.groupby(["task", "model"]):
            ci = stats.stratified_bootstrap(grp["value"].to_numpy()[:, None], stats.iqm,
                                            rng_for(config, protocol, metric, task, model, arm, *key_extra),
                                            config.reps, config.confidence)  # fmt: skip
            text = f"{ci.estimate:.3g} [{ci.low:.3g}, {ci.high:.3g}]"
            out.setdefault((task, model), {})[_header(protocol, column)] = text
    frame = pd.DataFrame([{"task": t, "model": m, **cells} for (t, m), cells in out.items()])
    return frame.sort_values(["task", "model"]).reset_index(drop=True) if len(frame) else frame


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table; missing cells print as "-"."""
    head = list(frame.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join("-" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suites.report.compact", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory, e.g. results/quick/<run>")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = ReportConfig()
    for protocol, columns in COLUMNS.items():
        frame = compact_table(run.rows, protocol, columns, config)
        if len(frame):
            print(f"{protocol}:\n\n{to_markdown(frame)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
