"""What each metric the protocols write means: label, unit, direction, x-axis and summary.

A metric not listed here is still reported, with its direction inferred from its name
(lower is better for *_mse, *_ms, *_s, *_mb, *_loss and errors; higher otherwise).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """How the report reads one metric.

    Attributes:
        label: axis label, unit included.
        lower_is_better: direction of "better".
        step_label: what the ``step`` column means for this metric.
        summary: how one run's rows reduce to one number: ``"last"`` (the value at the largest
            step: k = K inner steps, the last iteration, the largest T), ``"post"`` (the mean over
            steps >= 0, after a task switch) or ``"mean"`` (the mean over all steps).
    """

    label: str
    lower_is_better: bool
    step_label: str = "step"
    summary: str = "last"


METRICS: dict[str, MetricSpec] = {
    "query_mse": MetricSpec("query MSE (normalised targets)", True, "inner steps k"),
    "online_mse": MetricSpec(
        "online MSE (normalised targets)", True, "time step relative to the task switch", "post"
    ),
    "meta_train_loss": MetricSpec("meta-training loss (MSE)", True, "meta-iteration"),
    "time_meta_train_s": MetricSpec("meta-training time (s)", True),
    "time_adapt_ms": MetricSpec("adaptation latency (ms)", True),
    "time_step_ms": MetricSpec("step latency (ms)", True),
    "params": MetricSpec("parameters (count)", True),
    "return": MetricSpec("episode return", False, "inner steps"),
    "meta_train_return": MetricSpec("meta-training return", False, "meta-iteration"),
    "model_error": MetricSpec("model prediction error (MSE)", True, "time step", "mean"),
    "plan_ms": MetricSpec("planning time per step (ms)", True, "step", "mean"),
    "fwd_bwd_ms": MetricSpec("forward+backward time (ms)", True, "sequence length T"),
    "fwd_bwd_ms_hidden": MetricSpec("forward+backward time (ms)", True, "hidden size"),
    "peak_mem_mb": MetricSpec("peak memory (MB)", True, "sequence length T"),
    "step_latency_ms_b1": MetricSpec("step latency, batch 1 (ms)", True, "steps taken", "mean"),
    "step_latency_ms_b32": MetricSpec("step latency, batch 32 (ms)", True, "steps taken", "mean"),
    "maml_update_ms_vmap": MetricSpec("MAML meta-update, vmap (ms)", True, "number of tasks"),
    "maml_update_ms_loop": MetricSpec(
        "MAML meta-update, per-task loop (ms)", True, "number of tasks"
    ),
    "collect_steps_per_s": MetricSpec("data collection (env steps/s)", False),
}

LOWER_SUFFIXES = ("_mse", "_ms", "_s", "_mb", "_loss", "error")

MAIN_METRIC: dict[str, str] = {
    "dynamics": "query_mse",
    "policy": "return",
    "mpc": "return",
    "timing": "fwd_bwd_ms",
}
"""Each protocol's headline metric."""

MAIN_ARMS: tuple[str, ...] = ("maml", "maml+adapter", "timing")
"""Preferred arm for headline numbers, in order; otherwise the first arm alphabetically."""


def spec(metric: str) -> MetricSpec:
    """The metric's spec; for an unlisted metric, one inferred from its name."""
    if metric in METRICS:
        return METRICS[metric]
    lower = metric.endswith(LOWER_SUFFIXES) and not metric.endswith("per_s")
    return MetricSpec(metric, lower)
