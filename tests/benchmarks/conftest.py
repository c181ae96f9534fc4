"""pytest-benchmark regression checks on normalised figures (robust to a noisy shared machine).

Each benchmark also times a calibration operation just before it, with the same timer, and
stores ``extra_info["normalised"]`` = its median / the calibration's median. Save a baseline,
then compare against it (the addopts of pyproject.toml skip benchmarks, hence ``-o addopts=``):

    python -m pytest tests/benchmarks -o addopts= -p no:cacheprovider --benchmark-only \
        --benchmark-json=.benchmarks/baseline.json
    python -m pytest tests/benchmarks -o addopts= -p no:cacheprovider --benchmark-only \
        --norm-compare=.benchmarks/baseline.json --norm-compare-fail=50%

A benchmark whose normalised figure grew by more than the tolerance fails, with a message
naming it and both figures. pytest-benchmark's own ``--benchmark-compare-fail=median:30%``
compares the raw times; use it on a quiet machine only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meta.allocator import keep_freed_memory
from tests.benchmarks.normalised import (
    calibration_op,
    latest_saved,
    load_baseline,
    median_time,
    parse_tolerance,
    regression,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("normalised benchmarks")
    group.addoption("--norm-compare", nargs="?", const="", default=None, metavar="JSON",
                    help="compare normalised figures with a saved pytest-benchmark JSON "
                         "(no value: the newest under .benchmarks/)")  # fmt: skip
    group.addoption("--norm-compare-fail", default="50%", metavar="TOL",
                    help="fail a benchmark whose normalised figure grew by more than TOL (default 50%%)")  # fmt: skip


@pytest.fixture(autouse=True, scope="session")
def _keep_freed_memory() -> None:
    """The allocator setting of every ssm-metarl process (meta/allocator.py), so that these
    figures are those of the suite and of ``ssm-metarl bench``."""
    keep_freed_memory()


@pytest.fixture(scope="session")
def norm_baseline(pytestconfig: pytest.Config) -> tuple[dict[str, float], float] | None:
    """(baseline ratios, tolerance) when --norm-compare is given, else None."""
    where = pytestconfig.getoption("--norm-compare")
    if where is None:
        return None
    path = Path(where) if where else latest_saved()
    return load_baseline(path), parse_tolerance(pytestconfig.getoption("--norm-compare-fail"))


@pytest.fixture
def normalised(
    benchmark, request: pytest.FixtureRequest, norm_baseline: tuple[dict[str, float], float] | None
) -> Callable[..., Any]:
    """``normalised(fn, rounds=5)``: benchmark ``fn``, record (and check) its normalised figure, and
    return what its last call returned, for the test to check the work was really done."""
    calibrate = calibration_op()

    def run(fn: Callable[[], Any], rounds: int = 5, warmup_rounds: int = 1) -> Any:
        if benchmark.disabled:  # --benchmark-disable: run once, only to check it executes
            return benchmark.pedantic(fn, rounds=1, iterations=1)
        timer = getattr(benchmark, "_timer", None) or time.perf_counter
        calibration = median_time(calibrate, timer)
        result = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        ratio = benchmark.stats.stats.median / calibration
        benchmark.extra_info["calibration_s"] = calibration
        benchmark.extra_info["normalised"] = ratio
        if norm_baseline is not None:
            message = regression(request.node.nodeid, ratio, *norm_baseline)
            if message:
                pytest.fail(message)
        return result

    return run
