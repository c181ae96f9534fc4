"""Timing tables: fitted log-log complexity slopes and speed ratios of the timing protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from suites.report.query import rows_of


def slopes(rows: pd.DataFrame, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """Per model, the slope of log(value) against log(step) over every run's points.

    A slope of 1 means the cost grows linearly in the step (T or hidden size). The interval is
    the least-squares slope +- t_{(1+c)/2, n-2} x its standard error (scipy.stats.linregress).

    Returns:
        DataFrame: model, points, slope, low, high, intercept (of the log-log fit).
    """
    sub = rows_of(rows, "timing", metric)
    sub = sub.loc[(sub["step"] > 0) & (sub["value"] > 0)]
    out = []
    for model, grp in sub.groupby("model"):
        if grp["step"].nunique() < 2:
            continue
        fit = stats.linregress(np.log(grp["step"].to_numpy(float)), np.log(grp["value"].to_numpy()))
        n = len(grp)
        half = (stats.t.ppf((1 + confidence) / 2, n - 2) * fit.stderr) if n > 2 else np.nan
        out.append(
            {
                "model": model,
                "points": n,
                "slope": float(fit.slope),
                "low": float(fit.slope - half),
                "high": float(fit.slope + half),
                "intercept": float(fit.intercept),
            }
        )
    return pd.DataFrame(out)


def medians(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per model and step: median over runs of the metric (runs = seeds and tasks)."""
    sub = rows_of(rows, "timing", metric)
    return sub.groupby(["model", "step"], as_index=False)["value"].median()


def vmap_speedup(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and number of tasks: median vmap and loop meta-update times and the median of
    the per-seed ratio loop / vmap (how many times faster the vmapped update is)."""
    keys = ["task", "model", "seed", "step"]
    vm = rows_of(rows, "timing", "maml_update_ms_vmap")[[*keys, "value"]]
    lp = rows_of(rows, "timing", "maml_update_ms_loop")[[*keys, "value"]]
    both = vm.merge(lp, on=keys, suffixes=("_vmap", "_loop"))
    if both.empty:
        return pd.DataFrame()
    both["speedup"] = both["value_loop"] / both["value_vmap"]
    table = both.groupby(["model", "step"], as_index=False)[
        ["value_vmap", "value_loop", "speedup"]
    ].median()
    return table.rename(columns={"step": "tasks", "value_vmap": "vmap_ms", "value_loop": "loop_ms"})


def collect_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Collection-throughput rows with the task in the task column.

    The timing protocol's cells have task "-" and write ``collect_steps_per_s/<task>``; rows
    already named ``collect_steps_per_s`` keep their task.
    """
    sub = rows.loc[(rows["protocol"] == "timing") & rows["metric"].str.startswith("collect_steps_per_s")].copy()
    named = sub["metric"].str.contains("/", regex=False)
    sub.loc[named, "task"] = sub.loc[named, "metric"].str.split("/", n=1).str[1]
    sub["metric"] = "collect_steps_per_s"
    return sub


def complexity(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per model: the theory of its sequence-mode work beside the fitted slopes against T and width.

    Returns:
        DataFrame: model, theory, slope_T with low_T / high_T, slope_hidden with low_hidden /
        high_hidden (``slopes`` over every run's points; a missing sweep leaves NaN).
    """
    from suites.protocols.timing.protocol import COMPLEXITY

    out = pd.DataFrame({"model": sorted(rows.loc[rows["protocol"] == "timing", "model"].unique())})
    if out.empty:
        return out
    out["theory"] = out["model"].map(lambda m: COMPLEXITY.get(m, ("-", ""))[0])
    for metric, key in (("fwd_bwd_ms", "T"), ("fwd_bwd_ms_hidden", "hidden")):
        fit = slopes(rows, metric, confidence)
        cols = {"slope": f"slope_{key}", "low": f"low_{key}", "high": f"high_{key}"}
        if fit.empty:
            fit = pd.DataFrame(columns=["model", *cols])
        out = out.merge(fit[["model", *cols]].rename(columns=cols), on="model", how="left")
    return out
