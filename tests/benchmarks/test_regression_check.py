"""The normalised regression check fails on a deliberately slowed hot path and passes otherwise.

Runs in the default test run (no ``benchmark`` fixture, about a second): it uses the functions
the ``normalised`` fixture of conftest.py uses, with the process clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from models import make_model
from suites.protocols.timing.protocol import fwd_bwd_fn
from tests.benchmarks.normalised import (
    calibration_op,
    latest_saved,
    load_baseline,
    median_time,
    parse_tolerance,
    regression,
)

NAME = "tests/benchmarks/test_hot_paths.py::test_fwd_bwd[mlp]"


def _normalised(fn) -> float:
    calibration = median_time(calibration_op(), time.process_time)
    return median_time(fn, time.process_time, repeats=9) / calibration


def _save_baseline(path: Path, ratio: float) -> Path:
    """A file in the layout pytest-benchmark's --benchmark-json writes (the fields read here)."""
    entry = {"fullname": NAME, "group": "fwd_bwd", "extra_info": {"normalised": ratio}, "stats": {}}
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": [entry]}))
    return path


def test_slowed_hot_path_fails_and_the_original_passes(tmp_path: Path) -> None:
    model = make_model("mlp", 23, 17, param_budget=20_000)
    hot = fwd_bwd_fn(model, 8, 128, torch.Generator().manual_seed(0))

    def slowed() -> None:  # the regression: the same work done three times
        for _ in range(3):
            hot()

    baseline = load_baseline(_save_baseline(tmp_path / "baseline.json", _normalised(hot)))
    tolerance = parse_tolerance("30%")
    assert regression(NAME, _normalised(hot), baseline, tolerance) is None
    message = regression(NAME, _normalised(slowed), baseline, tolerance)
    assert message is not None and message.startswith(f"{NAME}: normalised time")
    assert "allowed: 1.30x" in message


def test_regression_rule() -> None:
    baseline = {"a": 2.0}
    assert regression("a", 2.59, baseline, 0.3) is None
    assert regression("a", 2.61, baseline, 0.3) == (
        "a: normalised time 2.610 is 1.30x the baseline's 2.000 (allowed: 1.30x)"
    )
    assert regression("new", 100.0, baseline, 0.3) is None  # nothing to compare with


def test_options_and_files_are_checked(tmp_path: Path) -> None:
    assert parse_tolerance("25%") == pytest.approx(0.25) and parse_tolerance("0.5") == 0.5
    with pytest.raises(ValueError, match=r"--norm-compare-fail: expected a tolerance like 30% or 0\.3, got 'fast'"):
        parse_tolerance("fast")
    with pytest.raises(ValueError, match="--norm-compare-fail: expected a positive tolerance"):
        parse_tolerance("-5%")
    with pytest.raises(ValueError, match="not found"):
        load_baseline(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'benchmarks' list"):
        load_baseline(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="expected a saved benchmark JSON under"):
        latest_saved(tmp_path / "none")
    (tmp_path / "store" / "Linux").mkdir(parents=True)
    saved = _save_baseline(tmp_path / "store" / "Linux" / "0001_x.json", 1.0)
    assert latest_saved(tmp_path / "store") == saved
