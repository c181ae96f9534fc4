"""Aggregate statistics over seeds and tasks, with stratified-bootstrap confidence intervals.

Every function takes scores as one array shape, ``(runs, tasks)``: column j holds the runs
(seeds) of task j. Tasks may have different numbers of runs; missing runs are NaN and are
dropped per task, never imputed. Each estimator returns an :class:`Interval` (point estimate and
a percentile confidence interval) and draws its resamples from an explicit
``numpy.random.Generator``, never the global RNG.

References:
    Agarwal, Schwarzer, Castro, Courville, Bellemare. "Deep Reinforcement Learning at the Edge of
    the Statistical Precipice", NeurIPS 2021 (the rliable estimators reimplemented here: IQM,
    stratified bootstrap, probability of improvement, normalised scores).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import stats

Aggregate = Callable[[np.ndarray], np.ndarray]
"""Maps resamples ``(reps, n)`` to one value per resample ``(reps,)``, along the last axis."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval.

    Attributes:
        estimate: the statistic on the observed data.
        low: lower end of the interval.
        high: upper end of the interval.
    """

    estimate: float
    low: float
    high: float


def mean(x: np.ndarray) -> np.ndarray:
    """Arithmetic mean along the last axis. Shapes: (..., n) -> (...)."""
    return np.mean(x, axis=-1)


def median(x: np.ndarray) -> np.ndarray:
    """Median along the last axis. Shapes: (..., n) -> (...)."""
    return np.median(x, axis=-1)


def iqm(x: np.ndarray) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of values along the last axis.

    Shapes: (..., n) -> (...). References: Agarwal et al. 2021, Sec. 4.

    The same operations as scipy.stats.trim_mean(x, 0.25, axis=-1) (partition, slice, mean), so
    the same bits, without its per-call input handling, which cost more than the arithmetic on a
    report's thousand small resample arrays; NaN or empty input goes to scipy itself.
    """
    a = np.asarray(x)
    if a.size == 0 or a.shape[-1] == 0 or np.isnan(a).any():
        return np.asarray(stats.trim_mean(a, 0.25, axis=-1))
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(float)
    n = a.shape[-1]
    low = int(0.25 * n)
    return np.asarray(np.mean(np.partition(a, (low, n - low - 1), axis=-1)[..., low : n - low], axis=-1))


def std(x: np.ndarray) -> np.ndarray:
    """Sample standard deviation (ddof=1; 0 for a single value). Shapes: (..., n) -> (...)."""
    if x.shape[-1] < 2:
        return np.zeros(x.shape[:-1])
    return np.std(x, axis=-1, ddof=1)


AGGREGATES: dict[str, Aggregate] = {"mean": mean, "median": median, "iqm": iqm, "std": std}


def _columns(scores: np.ndarray, name: str = "scores") -> list[np.ndarray]:
    """The non-NaN runs of each task; ValueError when a task has none."""
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (runs, tasks), got shape {arr.shape}")
    cols = [arr[~np.isnan(arr[:, j]), j] for j in range(arr.shape[1])]
    if not cols or any(c.size == 0 for c in cols):
        raise ValueError(
            f"{name}: expected at least one finite run per task, got shape {arr.shape}"
        )
    return cols


def _resample(cols: list[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap: runs drawn with replacement within each task, tasks kept.

    The draw per task is ``rng.integers(0, n, (reps, n))``, the same as scipy.stats.bootstrap,
    so a single task reproduces scipy's resamples under the same Generator.

    Shapes: list of (n_j,) -> (reps, sum_j n_j).
    """
    return np.concatenate([c[rng.integers(0, c.size, (reps, c.size))] for c in cols], axis=1)


def _percentile_interval(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check(reps: int, confidence: float) -> None:
    if not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps: expected a positive int, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence!r}")


def stratified_bootstrap(
    scores: np.ndarray,
    aggregate: Aggregate,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> Interval:
    """Aggregate over all runs x tasks with a stratified-bootstrap percentile interval.

    Args:
        scores: (runs, tasks), NaN for missing runs.
        aggregate: e.g. :func:`iqm`; applied to the pooled runs of all tasks.
        rng: the Generator the resamples are drawn from.
        reps: bootstrap repetitions (rliable uses 50,000; 2,000 keeps reports fast).
        confidence: coverage of the percentile interval.

    Returns:
        Interval(aggregate of the observed pool, percentile low, percentile high).

    References: Agarwal et al. 2021, "stratified bootstrap confidence intervals".
    """
    _check(reps, confidence)
    cols = _columns(scores)
    point = float(aggregate(np.concatenate(cols)[None, :])[0])
    dist = aggregate(_resample(cols, reps, rng))
    return Interval(point, *_percentile_interval(dist, confidence))


def bootstrap_means(
    groups: list[np.ndarray],
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> list[Interval]:
    """The mean of each group with its bootstrap percentile interval, for many groups at once.

    Equal, draw for draw, to calling ``stratified_bootstrap(g[:, None], mean, rng, reps,
    confidence)`` on each group in turn with the same ``rng``; a figure's bands need thousands of
    such intervals (one per curve point), and the per-call overhead dominated the report's time.

    Args:
        groups: 1-D arrays of runs; NaN runs are dropped.
        rng: the Generator the resamples are drawn from.
        reps: bootstrap repetitions.
        confidence: coverage of the percentile interval.
    """
    _check(reps, confidence)
    if not groups:
        return []
    cols = [_columns(np.asarray(g, dtype=float)[:, None], f"groups[{i}]")[0] for i, g in enumerate(groups)]
    points, dists = [float(np.mean(c)) for c in cols], np.empty((len(cols), reps))
    start = 0
    while start < len(cols):  # a run of equal-sized groups takes one draw, the same stream as one each
        n, stop = cols[start].size, start + 1
        while stop < len(cols) and cols[stop].size == n:
            stop += 1
        runs = np.stack(cols[start:stop])  # (G, n)
        idx = rng.integers(0, n, (stop - start, reps, n))
        dists[start:stop] = np.take_along_axis(runs[:, None, :], idx, axis=2).mean(axis=-1)
        start = stop
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dists, [alpha, 1.0 - alpha], axis=1)
    return [Interval(p, float(lo), float(hi)) for p, lo, hi in zip(points, low, high, strict=True)]


def estimate(
    scores: np.ndarray,
    statistic: str,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> Interval:
    """:func:`stratified_bootstrap` with the aggregate named ``statistic`` (a key of AGGREGATES)."""
    if statistic not in AGGREGATES:
        raise ValueError(f"statistic: expected one of {sorted(AGGREGATES)}, got {statistic!r}")
    return stratified_bootstrap(scores, AGGREGATES[statistic], rng, reps, confidence)


def _poi(x_cols: list[np.ndarray], y_cols: list[np.ndarray], lower_is_better: bool) -> np.ndarray:
    """Mean over tasks of U / (n_x n_y). Shapes: per task (reps, n_x), (reps, n_y) -> (reps,)."""
    per_task = []
    for x, y in zip(x_cols, y_cols, strict=True):
        # U of the first sample counts pairs where it is larger (ties 1/2); "better" for a
        # lower-is-better metric means smaller, so the samples swap.
        a, b = (y, x) if lower_is_better else (x, y)
        u = stats.mannwhitneyu(a, b, alternative="two-sided", axis=-1).statistic
        per_task.append(u / (x.shape[-1] * y.shape[-1]))
    return np.mean(per_task, axis=0)


def probability_of_improvement(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    lower_is_better: bool = False,
    reps: int = 2000,
    confidence: float = 0.95,
) -> Interval:
    """P(X > Y): the probability that a run of X beats a run of Y on a random task.

    Per task, the Mann-Whitney U statistic over n_x n_y (ties count 1/2), averaged over tasks;
    the interval resamples the runs of X and of Y independently within each task.

    Args:
        x: (runs_x, tasks) scores of the candidate.
        y: (runs_y, tasks) scores of the baseline, the same tasks in the same order.
        rng: the Generator the resamples are drawn from.
        lower_is_better: if True, "X beats Y" means X < Y (errors, times).
        reps: bootstrap repetitions.
        confidence: coverage of the percentile interval.

    Returns:
        Interval of P(X better than Y), in [0, 1]; 0.5 means no difference.

    References: Agarwal et al. 2021, Sec. 4 "probability of improvement".
    """
    _check(reps, confidence)
    x_cols, y_cols = _columns(x, "x"), _columns(y, "y")
    if len(x_cols) != len(y_cols):
        raise ValueError(f"y: expected {len(x_cols)} tasks like x, got {len(y_cols)}")
    point = float(
        _poi([c[None, :] for c in x_cols], [c[None, :] for c in y_cols], lower_is_better)[0]
    )
    xs = [c[rng.integers(0, c.size, (reps, c.size))] for c in x_cols]
    ys = [c[rng.integers(0, c.size, (reps, c.size))] for c in y_cols]
    dist = _poi(xs, ys, lower_is_better)
    return Interval(point, *_percentile_interval(dist, confidence))


def normalise(scores: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per-task normalised scores (x - low) / (high - low): 0 at the low reference, 1 at the high.

    A lower-is-better metric is normalised with low = the bad reference and high = the good
    one (e.g. low = the error of predicting zero change, high = 0), so higher is always better.

    Shapes: scores (runs, tasks), low (tasks,), high (tasks,) -> (runs, tasks).
    """
    arr = np.asarray(scores, dtype=float)
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if arr.ndim != 2 or lo.shape != (arr.shape[1],) or hi.shape != (arr.shape[1],):
        raise ValueError(
            f"low/high: expected shape ({arr.shape[1] if arr.ndim == 2 else '?'},) for scores "
            f"of shape (runs, tasks), got scores {arr.shape}, low {lo.shape}, high {hi.shape}"
        )
    if np.any(hi == lo):
        raise ValueError(f"high: expected every task's high != low, got low {lo}, high {hi}")
    return (arr - lo) / (hi - lo)


def adaptation_gain(
    pre: np.ndarray,
    post: np.ndarray,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> Interval:
    """Mean of pre- minus post-adaptation error, paired by run, with a stratified interval.

    Positive means adaptation lowered the error.

    Shapes: pre, post (runs, tasks), row i of both from the same run (seed).
    """
    pre_a, post_a = np.asarray(pre, dtype=float), np.asarray(post, dtype=float)
    if pre_a.shape != post_a.shape:
        raise ValueError(f"post: expected the shape of pre {pre_a.shape}, got {post_a.shape}")
    return stratified_bootstrap(pre_a - post_a, mean, rng, reps, confidence)


def rank(estimates: dict[str, float], higher_is_better: bool = True) -> dict[str, int]:
    """Competition ranks (1 = best; ties share the better rank) of named point estimates."""
    sign = -1.0 if higher_is_better else 1.0
    ordered = sorted(estimates.values(), key=lambda v: sign * v)
    return {k: 1 + ordered.index(v) for k, v in estimates.items()}
