"""Report sections of per-protocol figures: adaptation and training curves, the task switch,
MPC returns, and the timing protocol's complexity curves and speed bars."""

from __future__ import annotations

import pandas as pd

from suites.report import complexity, plots
from suites.report.config import ReportConfig
from suites.report.document import Block, Figure, Plot, Section, Table, Text
from suites.report.metrics import spec
from suites.report.query import rows_of

ARM_ORDER = ("random", "unadapted", "pretrain", "maml", "maml+adapter", "oracle")
"""Bar order of MPC arms: from no adaptation to the oracle; other arms follow alphabetically."""
BANDS = "lines: mean over seeds; bands: bootstrap 95% percentile interval of that mean"


def _curve(
    rows: pd.DataFrame,
    protocol: str,
    metric: str,
    name: str,
    what: str,
    config: ReportConfig,
    *,
    style: str | None = "arm",
    vline: float | None = None,
    logy: bool = False,
) -> Figure | None:
    sub = rows_of(rows, protocol, metric)
    if sub.empty:
        return None
    arms = sub["arm"].nunique() > 1
    plot = Plot.of(
        plots.curves,
        sub,
        spec(metric).step_label,
        spec(metric).label,
        style=style if arms else None,
        vline=vline,
        logy=logy,
        n_boot=config.reps,
        seed=config.seed,
        dpi=config.dpi,
    )
    arm_note = "line style: arm; " if arms else ""
    return Figure(
        name,
        f"{what} One panel per task; colour: model; {arm_note}{BANDS} "
        f"(rows: protocol={protocol}, metric={metric}).",
        plot,
    )


def dynamics(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """Adaptation curves, meta-training curves and the error around a task switch."""
    figs = [
        _curve(
            rows,
            "dynamics",
            "query_mse",
            "adaptation_curves",
            "Query MSE on held-out tasks "
            "after k inner MAML steps (k = 0: the meta-learned initialisation).",
            config,
        ),
        _curve(
            rows,
            "dynamics",
            "meta_train_loss",
            "dynamics_meta_training",
            "Meta-training loss against meta-iteration.",
            config,
            logy=True,
        ),
        _curve(
            rows,
            "dynamics",
            "online_mse",
            "online_error_task_switch",
            "Online one-step "
            "error of a stream whose task switches at step 0 (dashed), without (arm maml) "
            "and with (arm maml+adapter) the test-time Adapter.",
            config,
            vline=0.0,
        ),
    ]
    blocks = tuple(f for f in figs if f is not None)
    return Section("Dynamics protocol", blocks) if blocks else None


def policy(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """Return against inner policy-gradient steps, and meta-training returns."""
    figs = [
        _curve(
            rows,
            "policy",
            "return",
            "policy_return_vs_steps",
            "Episode return on held-out tasks after 0..K inner policy-gradient steps.",
            config,
        ),
        _curve(
            rows,
            "policy",
            "meta_train_return",
            "policy_meta_training",
            "Meta-training return against meta-iteration.",
            config,
        ),
    ]
    blocks = tuple(f for f in figs if f is not None)
    return Section("Policy protocol", blocks) if blocks else None


def mpc(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """MPC episode return per arm, and the model's prediction error along the episode."""
    blocks: list[Block] = []
    ret = rows_of(rows, "mpc", "return")
    if not ret.empty:
        order = {a: i for i, a in enumerate(ARM_ORDER)}
        ret = ret.sort_values("arm", key=lambda s: s.map(lambda a: (order.get(a, len(order)), a)))
        plot = Plot.of(
            plots.bars,
            ret,
            "arm",
            "arm (adaptation of the planner's model)",
            spec("return").label,
            n_boot=config.reps,
            seed=config.seed,
            dpi=config.dpi,
        )
        blocks.append(
            Figure(
                "mpc_return_per_arm",
                "MPC episode return per arm and model, "
                "all tasks pooled; bars: mean over runs, whiskers: bootstrap 95% "
                "interval (rows: protocol=mpc, metric=return).",
                plot,
            )
        )
    err = _curve(
        rows,
        "mpc",
        "model_error",
        "mpc_model_error",
        "Prediction error of the planner's dynamics model along the MPC episode.",
        config,
    )
    if err is not None:
        blocks.append(err)
    return Section("MPC protocol", tuple(blocks)) if blocks else None


def _loglog(rows: pd.DataFrame, metric: str, config: ReportConfig) -> list[Block]:
    points = rows_of(rows, "timing", metric)
    fits = complexity.slopes(rows, metric, config.confidence)
    if points.empty or fits.empty:
        return []
    plot = Plot.of(
        plots.loglog,
        points,
        fits,
        f"{spec(metric).step_label} (log)",
        f"{spec(metric).label} (log)",
        dpi=config.dpi,
    )
    return [
        Figure(
            f"complexity_{metric}",
            f"{spec(metric).label} against "
            f"{spec(metric).step_label}, log-log: points are runs, lines least-squares "
            "power-law fits whose slope is the growth exponent (1 = linear) (rows: "
            f"protocol=timing, metric={metric}).",
            plot,
        ),
        Table(
            f"slopes_{metric}",
            f"fitted log-log slope of metric={metric} against "
            f"{spec(metric).step_label} per model, with its {config.confidence:.0%} "
            "t-interval (scipy.stats.linregress over all runs' points)",
            fits,
        ),
    ]


def timing_section(rows: pd.DataFrame, config: ReportConfig) -> Section | None:
    """Complexity curves with slopes, and speed bars and ratios."""
    blocks: list[Block] = []
    theory = complexity.complexity(rows, config.confidence)
    if "slope_T" in theory and theory["slope_T"].notna().any():
        blocks.append(
            Table(
                "complexity",
                "theory of each model's sequence-mode work (T steps, width d, SSM state size N, "
                "transformer window W; linear in T: slope 1) beside the fitted log-log slopes "
                f"of forward+backward time against T and against the hidden size, with {config.confidence:.0%} "
                "t-intervals (rows: protocol=timing, metric=fwd_bwd_ms, fwd_bwd_ms_hidden)",
                theory,
            )
        )
    for metric in ("fwd_bwd_ms", "fwd_bwd_ms_hidden", "peak_mem_mb"):
        blocks += _loglog(rows, metric, config)
    lat = rows.loc[
        (rows["protocol"] == "timing")
        & rows["metric"].isin(["step_latency_ms_b1", "step_latency_ms_b32"])
    ]
    if not lat.empty:
        lat = lat.groupby(["metric", "model", "seed"], as_index=False)["value"].mean()
        lat["batch"] = lat["metric"].str.replace("step_latency_ms_b", "batch ", regex=False)
        plot = Plot.of(
            plots.bars,
            lat,
            "batch",
            "batch size (rows stepped together)",
            "step latency (ms)",
            n_boot=config.reps,
            seed=config.seed,
            dpi=config.dpi,
        )
        blocks.append(
            Figure(
                "step_latency",
                "One-step latency at batch 1 and 32: bars mean "
                "over seeds of each run's mean over steps, whiskers bootstrap 95% "
                "interval (rows: protocol=timing, metric=step_latency_ms_b1/_b32).",
                plot,
            )
        )
    speed = complexity.vmap_speedup(rows)
    if not speed.empty:
        blocks.append(
            Table(
                "maml_vmap_speedup",
                "MAML meta-update: median time with vmap and "
                "with the per-task loop, and the median per-seed ratio loop / vmap "
                "(rows: protocol=timing, metric=maml_update_ms_vmap, "
                "maml_update_ms_loop; step = number of tasks)",
                speed,
            )
        )
        bars = speed.rename(columns={"speedup": "value"})
        plot = Plot.of(
            plots.bars,
            bars,
            "tasks",
            "tasks per meta-batch (count)",
            "speed-up of vmap over loop (x)",
            dpi=config.dpi,
        )
        blocks.append(
            Figure(
                "maml_vmap_speedup",
                "Speed-up of the vmapped MAML meta-update "
                "over the per-task loop (median ratio per model; table "
                "maml_vmap_speedup).",
                plot,
            )
        )
    coll = complexity.collect_rows(rows)
    if not coll.empty:
        plot = Plot.of(
            plots.bars,
            coll,
            "task",
            "task",
            spec("collect_steps_per_s").label,
            hue=None,
            n_boot=config.reps,
            seed=config.seed,
            dpi=config.dpi,
        )
        blocks.append(
            Figure(
                "collect_speed",
                "Data-collection throughput per task: bars mean "
                "over runs, whiskers bootstrap 95% interval (rows: protocol=timing, "
                "metric=collect_steps_per_s).",
                plot,
            )
        )
    if not blocks:
        return None
    return Section(
        "Timing protocol",
        (
            Text(
                "Times as the timing protocol recorded them; the "
                "host and threads are in the run metadata."
            ),
            *blocks,
        ),
    )
