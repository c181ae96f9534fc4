"""suites.report.render: figures drawn in worker processes are the bytes drawn in this one, a
report does not depend on how many processes drew it, and drawing errors reach the caller."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suites import plots
from suites.report import ReportConfig, build_report
from suites.report.document import Plot
from suites.report.render import Drawer
from tests.reports.synthetic_run import make_run_dir


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


def test_report_is_the_same_drawn_by_one_or_two_processes(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)
    one = build_report(run, tmp_path / "one", ReportConfig(reps=40, dpi=30, jobs=1))
    two = build_report(run, tmp_path / "two", ReportConfig(reps=40, dpi=30, jobs=2))
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".png"]) == 17
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


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
