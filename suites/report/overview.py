"""Report sections about the run itself: summary, suite, tasks, models, failures, metadata."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from suites.report import plots
from suites.report.config import ReportConfig
from suites.report.document import Code, Figure, Plot, Section, Table, Text
from suites.report.load import Run


def summary(run: Run, config: ReportConfig) -> Section:
    """What was run, how much of it finished, and how the intervals are computed."""
    status = run.cells["status"].value_counts()
    failed = int(len(run.cells) - status.get("ok", 0))
    protocols = ", ".join(sorted(run.rows["protocol"].unique())) or "none"
    lines = [
        f"Run directory `{run.path}`: suite `{run.suite_name}`, {len(run.cells)} cells "
        f"({int(status.get('ok', 0))} ok, {failed} not ok), {len(run.rows)} result rows, "
        f"protocols with results: {protocols}.",
        f"Intervals are percentile {config.confidence:.0%} intervals from {config.reps} "
        f"stratified-bootstrap repetitions (seed {config.seed}): runs (seeds) are resampled with "
        "replacement within each task (Agarwal et al. 2021). IQM is the mean of the middle 50% "
        "of runs x tasks (scipy.stats.trim_mean(x, 0.25)).",
        "Every number below is a query on rows.parquet of the run directory; each caption names "
        "the protocol, metric, arm and step it filters on. Every table is also a CSV under "
        "tables/.",
    ]
    if run.dropped_rows:
        lines.append(f"{run.dropped_rows} rows with a non-finite value were left out.")
    return Section("Summary", tuple(Text(t) for t in lines))


def suite(run: Run) -> Section:
    """The resolved suite definition the run used."""
    text = run.suite_toml or json.dumps(run.meta.get("suite", {}), indent=2, default=str)
    source = "suite.toml" if run.suite_toml else "meta.json (suite)"
    return Section("Suite definition", (Text(f"From `{source}` of the run directory."), Code(text)))


def tasks(run: Run) -> Section:
    """The task distributions, their parameter ranges and the protocols that used them."""
    used = run.rows.groupby("task")["protocol"].apply(lambda s: ", ".join(sorted(set(s))))
    listed = [t for t in run.meta.get("tasks") or [] if isinstance(t, dict) and "name" in t]
    frame = pd.DataFrame(listed)
    if not frame.empty:  # the known columns first, any others the runner adds after them
        known = [c for c in ("name", "family", "parameters", "horizon", "source") if c in frame]
        frame = frame[known + [c for c in frame.columns if c not in known]].fillna("")
    else:
        frame = pd.DataFrame({"name": sorted(used.index)})
    frame["protocols with results"] = frame["name"].map(used).fillna("")
    return Section(
        "Tasks",
        (
            Table(
                "tasks",
                "task distributions (meta.json tasks) and the "
                "protocols with rows on each (rows: task, protocol)",
                frame,
            ),
        ),
    )


def models(run: Run, config: ReportConfig) -> Section:
    """Per model: parameter count and cell outcomes, with a bar figure of the counts."""
    cells = run.cells
    # input and output sizes differ between protocols and tasks, so a model's count varies a little
    ok_params = cells.loc[cells["status"] == "ok"].groupby("model")["params"]
    params, low, high = ok_params.median(), ok_params.min(), ok_params.max()
    from_rows = run.rows.loc[run.rows["metric"] == "params"].groupby("model")["value"].median()
    names = sorted(set(cells["model"]) | set(run.rows["model"]))
    frame = pd.DataFrame(
        {
            "model": names,
            "params": [params.get(m, from_rows.get(m, float("nan"))) for m in names],
            "params min": [low.get(m, float("nan")) for m in names],
            "params max": [high.get(m, float("nan")) for m in names],
            "cells ok": [
                int(((cells["model"] == m) & (cells["status"] == "ok")).sum()) for m in names
            ],
            "cells not ok": [
                int(((cells["model"] == m) & (cells["status"] != "ok")).sum()) for m in names
            ],
            "rows": [int((run.rows["model"] == m).sum()) for m in names],
        }
    )
    for column in ("params", "params min", "params max"):
        frame[column] = frame[column].astype(float).round().astype("Int64")
    blocks: list[Table | Figure] = [
        Table(
            "models",
            "zoo models in this run: parameter count "
            "(median, min and max of cells.params over ok cells: input and output sizes differ "
            "between tasks), cells by "
            "status, result rows",
            frame,
        )
    ]
    counts = frame.dropna(subset=["params"]).rename(columns={"params": "value"})
    if not counts.empty:
        counts["value"] = counts["value"].astype(float)
        plot = Plot.of(
            plots.bars, counts, "model", "model", "trainable parameters (count)", hue=None, dpi=config.dpi
        )
        blocks.append(
            Figure(
                "params",
                "Trainable parameters per model (cells.params, median "
                "over ok cells); equal budgets make the comparison fair.",
                plot,
            )
        )
    return Section("Models", tuple(blocks))


def failures(run: Run) -> Section | None:
    """The cells that did not finish, with their error; None when all finished."""
    bad = run.cells.loc[run.cells["status"] != "ok"]
    if bad.empty:
        return None
    cols = [
        c
        for c in ("protocol", "task", "model", "training_arm", "seed", "cell_id", "status", "error")
        if c in bad.columns
    ]
    return Section(
        "Failed cells",
        (
            Text(
                f"{len(bad)} cell(s) did not finish; their rows are absent from every table and "
                "figure. Tracebacks are in cells.parquet and cells/<cell_id>.json."
            ),
            Table(
                "failed_cells",
                "cells with status other than ok (cells.parquet)",
                bad[cols].reset_index(drop=True),
            ),
        ),
    )


def _flatten(meta: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, f"{name}.")
        else:
            out.append((name, json.dumps(value) if isinstance(value, list) else str(value)))
    return out


def metadata(run: Run) -> Section:
    """Versions, commit, host, threads, hashes and wall time, as meta.json records them."""
    shown = {k: v for k, v in run.meta.items() if k not in ("suite", "tasks")}
    frame = pd.DataFrame(_flatten(shown), columns=["key", "value"])
    return Section(
        "Run metadata",
        (
            Table(
                "metadata",
                "meta.json of the run directory (the suite and task lists are shown above)",
                frame,
            ),
        ),
    )
