"""suites.report.plots: the bands it draws are the per-step means and their bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from suites.report import plots


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        ("t", m, s, k, (2.0 if m == "a" else 1.0) / (k + 1) + rng.normal(0, 0.01))
        for m in ("a", "b")
        for s in range(4)
        for k in range(3)
    ]
    return pd.DataFrame(rows, columns=["task", "model", "seed", "step", "value"])


def test_mean_bands_are_group_means_with_intervals_around_them() -> None:
    data = _frame()
    bands = plots.mean_bands(data, ["task", "model", "step"], n_boot=200, seed=0)
    want = data.groupby(["task", "model", "step"])["value"].mean().to_numpy()
    np.testing.assert_allclose(bands["mean"].to_numpy(), want)
    assert (bands["low"] <= bands["mean"]).all() and (bands["mean"] <= bands["high"]).all()
    again = plots.mean_bands(data, ["task", "model", "step"], n_boot=200, seed=0)
    pd.testing.assert_frame_equal(bands, again)


@pytest.mark.parametrize("kind", ["curves", "bars"])
def test_figures_render_to_png(kind: str) -> None:
    data = _frame()
    if kind == "curves":
        png = plots.curves(data, "inner steps", "MSE", n_boot=20, dpi=20)
    else:
        png = plots.bars(data, "model", "model", "MSE", hue=None, n_boot=20, dpi=20)
    assert png.startswith(b"\x89PNG")
