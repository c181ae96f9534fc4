"""suites.report.stats against values computed by hand on tiny tables and against direct loops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from suites.report import stats

# (runs, tasks): task 0 has runs 1, 3, 5, 6; task 1 has 2, 4, 100, 7.
TABLE = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 100.0], [6.0, 7.0]])


def test_aggregates_by_hand() -> None:
    pooled = TABLE.T.ravel()[None, :]  # 1 2 3 4 5 6 7 100 once sorted
    # IQM: drop the lowest 2 and highest 2 of 8, mean of 3 4 5 6.
    assert stats.iqm(pooled)[0] == pytest.approx(4.5)
    assert stats.mean(pooled)[0] == pytest.approx(128 / 8)
    assert stats.median(pooled)[0] == pytest.approx(4.5)
    assert stats.std(np.array([[1.0, 3.0]]))[0] == pytest.approx(np.sqrt(2.0))
    assert stats.std(np.array([[5.0]]))[0] == 0.0


def test_iqm_is_bit_for_bit_scipy_trim_mean() -> None:
    """The report's tables print IQMs: the fast path must give scipy's exact bits, NaN rows
    (NaN), integers (float) and every shape a table meets included."""
    rng = np.random.default_rng(5)
    shapes = ((1,), (3,), (8,), (2000, 3), (2000, 24), (4, 5, 7))
    arrays = [rng.normal(size=s) * 10.0 ** rng.uniform(-3, 3, size=s) for s in shapes]
    with_nan = rng.normal(size=(6, 9))
    with_nan[2, 4] = np.nan
    arrays += [with_nan, rng.integers(-50, 50, size=(40, 7))]
    for x in arrays:
        got, want = stats.iqm(x), np.asarray(sps.trim_mean(x, 0.25, axis=-1))
        assert got.shape == want.shape and got.dtype == want.dtype, x.shape
        np.testing.assert_array_equal(got, want)
    assert np.isnan(stats.iqm(with_nan)[2]) and np.isfinite(stats.iqm(with_nan)[[0, 1, 3, 4, 5]]).all()


def test_stratified_bootstrap_point_estimate_pools_runs_and_tasks() -> None:
    ci = stats.stratified_bootstrap(TABLE, stats.iqm, np.random.default_rng(0), reps=200)
    assert ci.estimate == pytest.approx(4.5)
    assert ci.low <= ci.estimate <= ci.high
    assert ci.low < ci.high


def test_stratified_bootstrap_is_reproducible_under_a_seed() -> None:
    a = stats.stratified_bootstrap(TABLE, stats.iqm, np.random.default_rng(7), reps=300)
    b = stats.stratified_bootstrap(TABLE, stats.iqm, np.random.default_rng(7), reps=300)
    c = stats.stratified_bootstrap(TABLE, stats.iqm, np.random.default_rng(8), reps=300)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_stratified_bootstrap_matches_a_direct_loop() -> None:
    """Resample each task's runs with replacement (tasks in order), pool, IQM, percentiles."""
    reps, rng = 400, np.random.default_rng(3)
    scores = np.array([[1.0, 10.0, 4.0], [2.0, 12.0, np.nan], [4.0, 11.0, 6.0]])
    cols = [scores[~np.isnan(scores[:, j]), j] for j in range(3)]
    idx = [rng.integers(0, c.size, (reps, c.size)) for c in cols]
    dist = [
        sps.trim_mean(np.concatenate([c[i[r]] for c, i in zip(cols, idx, strict=True)]), 0.25)
        for r in range(reps)
    ]
    want = np.percentile(dist, [2.5, 97.5])
    got = stats.stratified_bootstrap(scores, stats.iqm, np.random.default_rng(3), reps=reps)
    assert (got.low, got.high) == pytest.approx(tuple(want), abs=1e-12)
    assert got.estimate == pytest.approx(sps.trim_mean(np.concatenate(cols), 0.25))


def test_bootstrap_means_equals_one_stratified_bootstrap_per_group() -> None:
    """The batched version draws the same resamples in the same order: identical intervals."""
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=n) for n in (3, 3, 5, 1, 4)] + [np.array([1.0, np.nan, 3.0])]
    got = stats.bootstrap_means(groups, np.random.default_rng(7), reps=300)
    ref_rng = np.random.default_rng(7)
    want = [stats.stratified_bootstrap(g[:, None], stats.mean, ref_rng, reps=300) for g in groups]
    assert got == want
    assert got[-1].estimate == pytest.approx(2.0)


def test_bootstrap_means_names_an_empty_group() -> None:
    with pytest.raises(ValueError, match=r"groups\[1\]"):
        stats.bootstrap_means([np.ones(3), np.array([np.nan])], np.random.default_rng(0))


def test_one_task_matches_scipy_bootstrap() -> None:
    x = np.array([0.3, 1.2, 0.7, 2.5, 1.1, 0.9])
    ours = stats.stratified_bootstrap(x[:, None], stats.mean, np.random.default_rng(11), reps=500)
    ref = sps.bootstrap(
        (x,),
        np.mean,
        n_resamples=500,
        method="percentile",
        rng=np.random.default_rng(11),
        vectorized=True,
    )
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_probability_of_improvement_by_hand() -> None:
    # Task 0: x = 1 2 3, y = 2 2 0. Pairs with x > y: 1 (1>0) + 2 (2>0, two ties at 1/2)
    # + 3 (3 beats all) = 6 of 9. Task 1: x = 5 6 7 beats y = 1 1 1 always: 9 of 9.
    x = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]])
    y = np.array([[2.0, 1.0], [2.0, 1.0], [0.0, 1.0]])
    higher = stats.probability_of_improvement(x, y, np.random.default_rng(0), reps=100)
    assert higher.estimate == pytest.approx((6 / 9 + 1.0) / 2)
    assert higher.low <= higher.estimate <= higher.high
    # Lower is better: x < y in 2 pairs plus 2 ties (task 0) = 3 of 9, and 0 of 9 on task 1.
    lower = stats.probability_of_improvement(x, y, np.random.default_rng(0), True, reps=100)
    assert lower.estimate == pytest.approx((3 / 9 + 0.0) / 2)


def test_probability_of_improvement_of_equal_samples_is_one_half() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    ci = stats.probability_of_improvement(x, x.copy(), np.random.default_rng(0), reps=50)
    assert ci.estimate == pytest.approx(0.5)


def test_normalise_by_hand() -> None:
    # MSE task: low = 1 (zero-change error), high = 0; return task: low = 0, high = 20.
    got = stats.normalise(
        np.array([[0.5, 10.0], [0.25, 25.0]]), np.array([1.0, 0.0]), np.array([0.0, 20.0])
    )
    np.testing.assert_allclose(got, [[0.5, 0.5], [0.75, 1.25]])
    with pytest.raises(ValueError, match="high"):
        stats.normalise(np.ones((2, 2)), np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="low/high"):
        stats.normalise(np.ones((2, 2)), np.array([1.0]), np.array([0.0]))


def test_adaptation_gain_is_the_paired_mean_difference() -> None:
    pre = np.array([[1.0, 2.0], [3.0, 4.0]])
    post = np.array([[0.5, 1.0], [1.0, 2.0]])
    ci = stats.adaptation_gain(pre, post, np.random.default_rng(0), reps=100)
    assert ci.estimate == pytest.approx((0.5 + 1.0 + 2.0 + 2.0) / 4)
    assert 0.5 <= ci.low <= ci.estimate <= ci.high <= 2.0
    with pytest.raises(ValueError, match="post"):
        stats.adaptation_gain(pre, post[:1], np.random.default_rng(0))


def test_rank_shares_ties() -> None:
    assert stats.rank({"a": 0.9, "b": 0.5, "c": 0.9}) == {"a": 1, "c": 1, "b": 3}
    assert stats.rank({"a": 0.9, "b": 0.5}, higher_is_better=False) == {"b": 1, "a": 2}


def test_bad_input_names_the_field() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="scores: expected a 2-D array"):
        stats.stratified_bootstrap(np.ones(3), stats.mean, rng)
    with pytest.raises(ValueError, match="at least one finite run per task"):
        stats.stratified_bootstrap(np.array([[1.0, np.nan]]), stats.mean, rng)
    with pytest.raises(ValueError, match="reps"):
        stats.stratified_bootstrap(TABLE, stats.mean, rng, reps=0)
    with pytest.raises(ValueError, match="statistic"):
        stats.estimate(TABLE, "mode", rng)
    with pytest.raises(ValueError, match="y: expected 2 tasks"):
        stats.probability_of_improvement(TABLE, np.ones((2, 3)), rng)
