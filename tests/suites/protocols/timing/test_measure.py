"""Timers, peak memory and log-log slopes of suites.protocols.timing.measure."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from suites.protocols.timing.measure import (
    TimingStats,
    loglog_slope,
    peak_memory_mb,
    resolve_clock,
    time_call,
    time_interleaved,
)


def test_stats_median_and_iqr_match_numpy() -> None:
    times = (0.5, 0.1, 0.4, 0.2, 0.9, 0.3)
    st = TimingStats(times, "wall")
    assert st.median == pytest.approx(np.median(times))
    assert st.q1 == pytest.approx(np.quantile(times, 0.25))
    assert st.iqr == pytest.approx(np.quantile(times, 0.75) - np.quantile(times, 0.25))
    assert st.min == 0.1 and st.ms() == pytest.approx(1e3 * np.median(times))


def test_time_call_warms_up_then_times_each_repeat() -> None:
    calls: list[int] = []
    st = time_call(lambda: calls.append(1), warmup=3, repeats=4, clock="wall")
    assert len(calls) == 7 and len(st.times) == 4 and st.clock == "wall"


def test_wall_clock_sees_sleep_and_process_clock_does_not() -> None:
    wall = time_call(lambda: time.sleep(0.02), warmup=0, repeats=3, clock="wall")
    cpu = time_call(lambda: time.sleep(0.02), warmup=0, repeats=3, clock="process")
    assert wall.median >= 0.019
    assert cpu.median < 0.01  # sleeping uses no CPU: the process clock ignores descheduled time


def test_process_clock_measures_work() -> None:
    a = torch.randn(256, 256)
    one = time_call(lambda: a @ a, warmup=1, repeats=5, clock="process")
    ten = time_call(lambda: [a @ a for _ in range(10)], warmup=1, repeats=5, clock="process")
    assert 4 < ten.median / one.median < 25


def test_cuda_timings_synchronise_around_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: events.append("sync"))
    time_call(lambda: events.append("call"), warmup=1, repeats=2, device="cuda")
    assert events == ["call", "sync", "call", "sync", "sync", "call", "sync"]


def test_clock_choice_and_errors() -> None:
    assert resolve_clock("auto", "cpu") == "process"
    assert resolve_clock("auto", "cuda") == "wall"
    with pytest.raises(ValueError, match="clock: expected 'wall' or 'auto' on CUDA"):
        resolve_clock("process", "cuda")
    with pytest.raises(ValueError, match=r"clock: expected one of \['auto', 'process', 'wall'\], got 'cpu'"):
        time_call(lambda: None, clock="cpu")
    with pytest.raises(ValueError, match="repeats: expected an int >= 1, got 0"):
        time_call(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup: expected an int >= 0, got -1"):
        time_interleaved({"a": lambda: None}, warmup=-1)
    with pytest.raises(ValueError, match="fns: expected at least one function"):
        time_interleaved({})


def test_interleaved_runs_round_robin() -> None:
    order: list[str] = []
    got = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, repeats=3)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert set(got) == {"a", "b"} and all(len(st.times) == 3 for st in got.values())


def test_peak_memory_counts_live_tensors_not_freed_ones() -> None:
    def one_big() -> None:
        torch.ones(10 * 2**20 // 4).sum()  # 10 MiB, freed at once

    def two_alive() -> None:
        a = torch.ones(10 * 2**20 // 4)
        b = torch.ones(10 * 2**20 // 4)
        del a, b

    def two_in_turn() -> None:
        for _ in range(2):
            torch.ones(10 * 2**20 // 4).sum()

    assert peak_memory_mb(one_big) == pytest.approx(10, abs=0.01)
    assert peak_memory_mb(two_alive) == pytest.approx(20, abs=0.01)
    assert peak_memory_mb(two_in_turn) == pytest.approx(10, abs=0.01)


def test_peak_memory_of_backward_grows_with_sequence_length() -> None:
    layer = torch.nn.Linear(16, 16)

    def fwd_bwd(T: int) -> float:
        x = torch.randn(4, T, 16)
        return peak_memory_mb(lambda: layer(x).tanh().sum().backward())

    small, large = fwd_bwd(256), fwd_bwd(1024)
    assert large / small == pytest.approx(4, rel=0.1)  # activations kept for backward: linear in T


def test_slope_recovers_exact_power_laws() -> None:
    x = [64, 256, 1024, 4096]
    fit = loglog_slope(x, [3e-4 * v**1.5 for v in x])
    assert fit.slope == pytest.approx(1.5) and fit.points == 4
    assert fit.low == pytest.approx(1.5) and fit.high == pytest.approx(1.5)
    assert math.exp(fit.intercept) == pytest.approx(3e-4)
    two = loglog_slope([1, 2], [1, 4])
    assert two.slope == pytest.approx(2) and math.isnan(two.low)


def test_slope_interval_covers_the_truth_on_noisy_repeats() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        x = np.repeat([64, 256, 1024, 4096], 5)
        y = 0.01 * x**1.0 * rng.lognormal(0, 0.1, len(x))
        fit = loglog_slope(x, y, 0.9)
        covered += fit.low <= 1.0 <= fit.high
    assert 0.84 <= covered / 200 <= 0.96  # a 90% interval covers about 90% of the time


def test_slope_rejects_bad_points() -> None:
    with pytest.raises(ValueError, match="at least 2 distinct values"):
        loglog_slope([8, 8], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive finite"):
        loglog_slope([8, 16], [1.0, 0.0])
    with pytest.raises(ValueError, match=r"equal 1-d lengths, got \(2,\) and \(3,\)"):
        loglog_slope([8, 16], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="confidence: expected a value in"):
        loglog_slope([8, 16, 32], [1.0, 2.0, 3.0], confidence=1.0)
