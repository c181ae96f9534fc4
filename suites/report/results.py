"""Report sections with the aggregate statistics: headline, normalised scores and ranks,
probability of improvement, adaptation gains, and per-task tables."""

from __future__ import annotations

import pandas as pd

from suites.report import plots, tables
from suites.report.config import ReportConfig
from suites.report.document import Block, Figure, Plot, Section, Table, Text
from suites.report.metrics import spec
from suites.report.query import Selection, main_selection, rows_of

PROTOCOLS = ("dynamics", "policy", "mpc", "timing")


def selections(rows: pd.DataFrame) -> list[Selection]:
    """The headline selection of every protocol that has rows for its main metric."""
    return [s for p in PROTOCOLS if (s := main_selection(rows, p)) is not None]


def _direction(metric: str) -> str:
    return "lower is better" if spec(metric).lower_is_better else "higher is better"


def _interval_frame(table: pd.DataFrame, panel: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": table["model"],
            "panel": panel,
            "estimate": table["iqm"],
            "low": table["low"],
            "high": table["high"],
        }
    )


def headline(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """Per model, each protocol's main metric: IQM over runs x tasks with its interval."""
    sels = selections(rows)
    if not sels:
        return None
    frame = pd.concat([tables.aggregate(rows, s, config) for s in sels], ignore_index=True)
    filters = "; ".join(f"{s.describe()} ({_direction(s.metric)})" for s in sels)
    arrows = frame["metric"].map(
        lambda m: " (lower better)" if spec(m).lower_is_better else " (higher better)"
    )
    panel = frame["protocol"] + ": " + frame["metric"] + arrows
    plot = Plot.of(
        plots.intervals,
        _interval_frame(frame, panel),
        "IQM over runs x tasks (metric's unit)",
        panel="panel",
        dpi=config.dpi,
    )
    return Section(
        "Headline",
        (
            Table(
                "headline",
                f"IQM over all runs x tasks per model with its {config.confidence:.0%} "
                f"stratified-bootstrap interval (low, high) and the mean; rows: {filters}",
                frame,
            ),
            Figure(
                "headline_intervals",
                "IQM (point) and stratified-bootstrap "
                f"{config.confidence:.0%} interval (bar) per model, one panel per protocol's main "
                f"metric, in that metric's unit; filters as in table headline: {filters}",
                plot,
            ),
        ),
    )


def normalised(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """Scores normalised per task between stated references, aggregated and ranked."""
    sels = [s for s in selections(rows) if s.protocol != "timing"]
    refs, norms = [], []
    for s in sels:
        ref = tables.references(rows, s, config)
        norm = tables.normalised(rows, s, ref, config)
        if norm.empty:
            continue
        refs.append(ref.assign(protocol=s.protocol, metric=s.metric))
        norms.append(
            norm.assign(protocol=s.protocol, metric=s.metric, arm=s.arm, filter=s.describe())
        )
    if not norms:
        return None
    ref_frame = pd.concat(refs, ignore_index=True)[
        ["protocol", "metric", "task", "low", "high", "source"]
    ]
    norm_frame = pd.concat(norms, ignore_index=True)[
        ["protocol", "metric", "arm", "model", "tasks", "iqm", "low", "high", "mean", "rank"]
    ]
    blocks: list[Block] = [
        Text(
            "Per task, a score is normalised as (x - low) / (high - low), so 0 is the low "
            "reference, 1 the high one and higher is always better, errors included. For MSE "
            f"metrics, low = {config.zero_change_mse:g}, the error of always predicting 0 on "
            "standardised targets (the training mean change; its MSE is the target variance, 1 "
            "by construction), and high = 0, a perfect prediction."
        ),
        Table(
            "normalisation_references",
            "low and high reference per protocol, metric and task, with their source",
            ref_frame,
        ),
        Table(
            "normalised_scores",
            "normalised score per model: IQM over runs x tasks with its "
            f"{config.confidence:.0%} stratified-bootstrap interval, mean, and rank by IQM "
            "(1 = best); rows: the headline filters of each protocol",
            norm_frame,
        ),
    ]
    if norm_frame["protocol"].nunique() > 1:
        ranks = norm_frame.pivot_table(index="model", columns="protocol", values="rank")
        ranks["mean rank"] = ranks.mean(axis=1)
        ranks = ranks.sort_values("mean rank").reset_index()
        ranks.columns.name = None
        blocks.append(
            Table(
                "ranking",
                "rank by normalised IQM per protocol and their mean "
                "(1 = best; from table normalised_scores)",
                ranks,
            )
        )
    plot = Plot.of(
        plots.intervals,
        _interval_frame(norm_frame, norm_frame["protocol"] + ": " + norm_frame["metric"]),
        "normalised score, IQM (0 = low ref, 1 = high)",
        panel="panel",
        dpi=config.dpi,
    )
    blocks.append(
        Figure(
            "normalised_intervals",
            "Normalised score per model: IQM (point) and "
            f"stratified-bootstrap {config.confidence:.0%} interval (bar), one panel "
            "per protocol (table normalised_scores).",
            plot,
        )
    )
    return Section("Normalised scores and ranking", tuple(blocks))


def improvement(rows: pd.DataFrame, config: ReportConfig, baseline: str) -> Section | None:
    """P(model better than the baseline) on each protocol's main metric."""
    parts = []
    for s in selections(rows):
        t = tables.improvement(rows, s, baseline, config)
        if not t.empty:
            parts.append(t.assign(protocol=s.protocol, metric=s.metric, arm=s.arm))
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True)[
        ["protocol", "metric", "arm", "model", "baseline", "tasks", "p_improvement", "low", "high"]
    ]
    plot = frame.rename(columns={"p_improvement": "iqm"})
    plot = Plot.of(
        plots.intervals,
        _interval_frame(plot, plot["protocol"] + ": " + plot["metric"]),
        f"P(model better than {baseline})",
        panel="panel",
        ref=0.5,
        dpi=config.dpi,
    )
    return Section(
        "Probability of improvement",
        (
            Text(
                f"P(X > Y) that a run of model X beats a run of the baseline `{baseline}` on a "
                "random task: per task the Mann-Whitney U statistic / (n_x n_y) (ties count 1/2), "
                "averaged over tasks, oriented so that better means lower for errors and times "
                "(Agarwal et al. 2021). 0.5 means no difference."
            ),
            Table(
                "probability_of_improvement",
                f"P(X > Y) over {baseline} with its {config.confidence:.0%} "
                "stratified-bootstrap interval; rows: the headline filters of each protocol",
                frame,
            ),
            Figure(
                "probability_of_improvement",
                f"P(model better than {baseline}) (point) with its "
                f"{config.confidence:.0%} interval (bar); dashed line: 0.5, no difference "
                "(table probability_of_improvement).",
                plot,
            ),
        ),
    )


def gains(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """Pre- minus post-adaptation error (or post- minus pre- return), per model and arm."""
    blocks: list[Block] = []
    for protocol, metric in (("dynamics", "query_mse"), ("policy", "return")):
        if rows_of(rows, protocol, metric).empty:
            continue
        t = tables.gains(rows, protocol, metric, config)
        if t.empty:
            continue
        what = (
            "error at step_pre minus error at step_post"
            if spec(metric).lower_is_better
            else "return at step_post minus return at step_pre"
        )
        blocks.append(
            Table(
                f"adaptation_gain_{protocol}",
                f"protocol={protocol}, "
                f"metric={metric}: {what} (inner steps), paired by seed, mean over "
                f"runs x tasks with its {config.confidence:.0%} stratified-bootstrap "
                "interval; positive = adaptation helped",
                t,
            )
        )
    if not blocks:
        return None
    return Section("Adaptation gain", tuple(blocks))


def per_task(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """Every metric per task, model and arm: n, mean, median, IQM with interval, std."""
    blocks: list[Block] = []
    for protocol in PROTOCOLS:
        if (rows["protocol"] == protocol).any():
            blocks.append(
                Table(
                    f"per_task_{protocol}",
                    f"protocol={protocol}: each metric at "
                    "its summary step (the largest step, or 'mean': the mean over "
                    "steps per run, over steps >= 0 for online_mse), per task, model "
                    "and arm; n runs, mean, median, IQM with its "
                    f"{config.confidence:.0%} bootstrap interval over seeds, std",
                    tables.per_task(rows, protocol, config),
                )
            )
    return Section("Per-task results", tuple(blocks)) if blocks else None
