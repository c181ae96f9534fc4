"""The report's statistical tables, each a query on the rows plus suites.report.stats estimators."""

from __future__ import annotations

import numpy as np
import pandas as pd

from suites.report import stats
from suites.report.config import ReportConfig
from suites.report.metrics import spec
from suites.report.query import Selection, matrix, paired, per_run, rng_for, rows_of, select

LITERATURE_RETURNS: dict[str, tuple[float, float, str]] = {
    "point-nav-2d": (
        -40.4,
        -2.3,
        "Finn et al. 2017 (MAML) data: return before adaptation / oracle",
    ),
    "halfcheetah-vel": (
        -129.5,
        -54.5,
        "Finn et al. 2017 (MAML) data: return before adaptation / oracle",
    ),
}
"""Low / high references for policy returns where the MAML paper (Finn et al. 2017) reports both."""


def per_task(rows: pd.DataFrame, protocol: str, config: ReportConfig) -> pd.DataFrame:
    """Per metric, task, model and arm: n, mean, median, IQM with its bootstrap interval, std.

    The interval resamples the seeds of one task (the one-task case of the stratified bootstrap).
    """
    out = []
    for metric in sorted(rows.loc[rows["protocol"] == protocol, "metric"].unique()):
        sel = select(rows, protocol, metric)
        runs = per_run(rows, sel)
        for (task, model, arm), grp in runs.groupby(["task", "model", "arm"]):
            x = grp["value"].to_numpy()[:, None]
            ci = stats.stratified_bootstrap(
                x,
                stats.iqm,
                rng_for(config, protocol, metric, task, model, arm),
                config.reps,
                config.confidence,
            )
            out.append(
                {
                    "metric": metric,
                    "step": "mean" if sel.step is None else sel.step,
                    "task": task,
                    "model": model,
                    "arm": arm,
                    "n": x.shape[0],
                    "mean": float(x.mean()),
                    "median": float(np.median(x)),
                    "iqm": ci.estimate,
                    "iqm_low": ci.low,
                    "iqm_high": ci.high,
                    "std": float(stats.std(x[:, 0])),
                }
            )
    return pd.DataFrame(out)


def aggregate(rows: pd.DataFrame, sel: Selection, config: ReportConfig) -> pd.DataFrame:
    """Per model: IQM over all runs x tasks with its stratified-bootstrap interval, and the mean."""
    runs = per_run(rows, sel)
    out = []
    for model, grp in runs.groupby("model"):
        x = matrix(grp, sorted(grp["task"].unique()))
        ci = stats.stratified_bootstrap(
            x,
            stats.iqm,
            rng_for(config, "agg", sel.describe(), str(model)),
            config.reps,
            config.confidence,
        )
        out.append(
            {
                "protocol": sel.protocol,
                "metric": sel.metric,
                "arm": sel.arm,
                "step": "mean" if sel.step is None else sel.step,
                "model": model,
                "runs": int(np.isfinite(x).sum()),
                "tasks": x.shape[1],
                "iqm": ci.estimate,
                "low": ci.low,
                "high": ci.high,
                "mean": float(np.nanmean(x)),
            }
        )
    return pd.DataFrame(out)


def references(rows: pd.DataFrame, sel: Selection, config: ReportConfig) -> pd.DataFrame:
    """Per task, the low and high normalisation references of ``sel``'s metric, with sources.

    MSE metrics: low = the error of predicting 0 on standardised targets, i.e. the training
    mean change (config.zero_change_mse), high = 0.
    Policy returns: the MAML paper's numbers where it gives both; MPC returns: the run's own
    "unadapted" (or "random") and "oracle" arms, averaged over models and seeds; otherwise the
    worst and best model-arm mean of this run on that task.
    """
    runs = per_run(rows, Selection(sel.protocol, sel.metric, None, sel.step))
    out = []
    for task, grp in runs.groupby("task"):
        arm_mean = grp.groupby("arm")["value"].mean()
        group_means = grp.groupby(["model", "arm"])["value"].mean()
        worst, best = (
            (group_means.max(), group_means.min())
            if spec(sel.metric).lower_is_better
            else (group_means.min(), group_means.max())
        )
        low_arm = next((a for a in ("random", "unadapted") if a in arm_mean.index), None)
        if sel.metric.endswith("_mse"):
            ref = (
                config.zero_change_mse,
                0.0,
                "predicting 0 = the mean change (target variance) / perfect prediction",
            )
        elif sel.protocol == "policy" and sel.metric == "return" and task in LITERATURE_RETURNS:
            ref = LITERATURE_RETURNS[str(task)]
        elif sel.protocol == "mpc" and low_arm and "oracle" in arm_mean.index:
            ref = (
                float(arm_mean[low_arm]),
                float(arm_mean["oracle"]),
                f"this run: mean of arm {low_arm} / mean of arm oracle",
            )
        else:
            ref = (float(worst), float(best), "this run: worst / best model-arm mean")
        out.append({"task": task, "low": ref[0], "high": ref[1], "source": ref[2]})
    return pd.DataFrame(out)


def normalised(
    rows: pd.DataFrame, sel: Selection, refs: pd.DataFrame, config: ReportConfig
) -> pd.DataFrame:
    """Per model: IQM of normalised scores (0 = low, 1 = high reference) and its rank.

    Tasks whose references coincide (high == low) cannot be normalised and are left out.
    """
    refs = refs.loc[refs["high"] != refs["low"]]
    tasks = list(refs["task"])
    runs = per_run(rows, sel)
    out = []
    for model, grp in runs.groupby("model"):
        present = [t for t in tasks if t in set(grp["task"])]
        if not present:
            continue
        r = refs.set_index("task").loc[present]
        x = stats.normalise(matrix(grp, present), r["low"].to_numpy(), r["high"].to_numpy())
        ci = stats.stratified_bootstrap(
            x,
            stats.iqm,
            rng_for(config, "norm", sel.describe(), str(model)),
            config.reps,
            config.confidence,
        )
        out.append(
            {
                "model": model,
                "tasks": len(present),
                "iqm": ci.estimate,
                "low": ci.low,
                "high": ci.high,
                "mean": float(np.nanmean(x)),
            }
        )
    table = pd.DataFrame(out)
    if not table.empty:
        ranks = stats.rank(dict(zip(table["model"], table["iqm"], strict=True)))
        table["rank"] = table["model"].map(ranks)
        table = table.sort_values("rank").reset_index(drop=True)
    return table


def improvement(
    rows: pd.DataFrame, sel: Selection, baseline: str, config: ReportConfig
) -> pd.DataFrame:
    """P(model better than baseline) per model, over the tasks both have, with its interval."""
    runs = per_run(rows, sel)
    base = runs.loc[runs["model"] == baseline]
    out = []
    for model, grp in runs.groupby("model"):
        if model == baseline:
            continue
        tasks = sorted(set(grp["task"]) & set(base["task"]))
        if not tasks:
            continue
        ci = stats.probability_of_improvement(
            matrix(grp, tasks),
            matrix(base, tasks),
            rng_for(config, "poi", sel.describe(), str(model)),
            spec(sel.metric).lower_is_better,
            config.reps,
            config.confidence,
        )
        out.append(
            {
                "model": model,
                "baseline": baseline,
                "tasks": len(tasks),
                "p_improvement": ci.estimate,
                "low": ci.low,
                "high": ci.high,
            }
        )
    return pd.DataFrame(out)


def gains(rows: pd.DataFrame, protocol: str, metric: str, config: ReportConfig) -> pd.DataFrame:
    """Adaptation gain per model and arm: value at the first step minus at the last, paired by
    seed and oriented so that positive means adaptation helped (error fell, return rose)."""
    sub = rows_of(rows, protocol, metric)
    first, last = int(sub["step"].min()), int(sub["step"].max())
    if first == last:
        return pd.DataFrame()
    sign = 1.0 if spec(metric).lower_is_better else -1.0
    out = []
    for arm in sorted(sub["arm"].unique()):
        pre = per_run(rows, Selection(protocol, metric, arm, first))
        post = per_run(rows, Selection(protocol, metric, arm, last))
        for model in sorted(set(pre["model"]) & set(post["model"])):
            p, q = pre.loc[pre["model"] == model], post.loc[post["model"] == model]
            a, b, tasks = paired(p, q)
            if not tasks:
                continue
            ci = stats.adaptation_gain(
                sign * a,
                sign * b,
                rng_for(config, "gain", protocol, metric, arm, model),
                config.reps,
                config.confidence,
            )
            out.append(
                {
                    "model": model,
                    "arm": arm,
                    "step_pre": first,
                    "step_post": last,
                    "tasks": len(tasks),
                    "gain": ci.estimate,
                    "low": ci.low,
                    "high": ci.high,
                }
            )
    return pd.DataFrame(out)
