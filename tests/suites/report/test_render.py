"""suites.report.draw: figures drawn in worker processes are the bytes drawn in this one, and
drawing errors reach the caller (test_report checks a whole report drawn by one or two processes)."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pandas as pd
import pytest

from suites.report import ReportConfig, plots
from suites.report.document import Plot
from suites.report.draw import MAX_JOBS, Drawer, default_jobs


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [("t", m, s, k, 1.0 / (k + 1) + rng.normal(0, 0.05)) for m in ("a", "b") for s in range(3) for k in range(4)]
    return pd.DataFrame(rows, columns=["task", "model", "seed", "step", "value"])


PLOTS = {
    "curves": Plot.of(plots.curves, _frame(), "inner steps", "MSE", n_boot=50, dpi=30),
    "bars": Plot.of(plots.bars, _frame(), "model", "model", "MSE", hue=None, n_boot=50, dpi=30),
}


def test_pool_draws_the_bytes_this_process_draws() -> None:
    here = {name: plot.draw() for name, plot in PLOTS.items()}
    with Drawer(2) as drawer:
        for name, plot in PLOTS.items():
            drawer.submit(name, plot)
        pooled = drawer.images()
    assert list(pooled) == list(PLOTS)
    assert pooled == here
    assert all(png.startswith(b"\x89PNG") for png in here.values())


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_figure_that_fails_to_draw_raises(jobs: int) -> None:
    broken = Plot.of(plots.bars, _frame().drop(columns="value"), "model", "model", "MSE", hue=None)
    with Drawer(jobs) as drawer, pytest.raises(KeyError, match="value"):
        drawer.submit("broken", broken)
        drawer.images()


def test_bad_use_names_the_field() -> None:
    with pytest.raises(ValueError, match="jobs: expected a positive int, got 0"):
        Drawer(0)
    with Drawer(1) as drawer:
        drawer.submit("bars", PLOTS["bars"])
        with pytest.raises(ValueError, match=r"figure name: .* got 'bars' twice"):
            drawer.submit("bars", PLOTS["bars"])
    with pytest.raises(ValueError, match="jobs: expected None or a positive int, got 0"):
        ReportConfig(jobs=0)


def _jobs_in_a_daemon(_: int) -> int:
    return default_jobs()


def test_default_jobs_is_one_inside_a_daemonic_worker() -> None:
    assert 1 <= default_jobs() <= MAX_JOBS
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_jobs_in_a_daemon, [0]) == [1]
