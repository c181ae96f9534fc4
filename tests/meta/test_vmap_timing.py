"""meta.vmap_timing: the vmap-vs-loop timer, its split into fixed and per-task cost, and its errors."""

from __future__ import annotations

import math

import pytest

from meta.vmap_timing import MetaUpdateTiming, main, time_meta_update

SMALL = {"param_budget": 2_000, "windows": 2, "length": 5, "input_dim": 3, "output_dim": 2}


def test_split_into_fixed_and_per_task_cost() -> None:
    t = MetaUpdateTiming("mlp", n_tasks=5, vmap_ms=30.0, loop_ms=90.0, vmap_one_ms=10.0)
    assert t.speedup == pytest.approx(3.0)
    assert t.per_task_ms == pytest.approx(5.0)  # (30 - 10) / (5 - 1)
    assert t.ceiling == pytest.approx(90.0 / 25.0)
    assert MetaUpdateTiming("mlp", 5, 10.0, 90.0, 10.0).ceiling == math.inf  # no per-task cost


def test_time_meta_update_measures_all_three_calls() -> None:
    t = time_meta_update("gru", n_tasks=3, repeats=1, warmup=0, **SMALL)
    assert (t.model, t.n_tasks) == ("gru", 3)
    assert t.vmap_ms > 0 and t.loop_ms > 0 and t.vmap_one_ms > 0
    assert t.speedup == pytest.approx(t.loop_ms / t.vmap_ms)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n_tasks": 1}, "n_tasks"), ({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")],
)
def test_bad_settings_name_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: expected an int"):
        time_meta_update("mlp", **{**SMALL, **kwargs})


def test_main_prints_one_line_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--models", "mlp", "neural-state", "--tasks", "2", "--repeats", "1", "--param-budget", "2000",
          "--windows", "2", "--length", "4", "--input-dim", "3", "--output-dim", "2"])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["mlp", "neural-state"]
    assert all("speedup" in line and "ceiling" in line for line in lines)
