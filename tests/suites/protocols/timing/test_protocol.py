"""The timing protocol: settings checks, the rows one cell writes, a suite run and its report."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest

from suites.protocols import PROTOCOLS, Cell
from suites.protocols.timing.protocol import COMPLEXITY, TimingSettings, run
from suites.report import build_report
from suites.report.complexity import collect_rows, complexity
from suites.report.config import ReportConfig
from suites.runner import run_suite
from suites.spec import load_suite
from suites.validate import SpecError

TINY = TimingSettings(
    seq_lengths=(8, 32),
    batch_size=2,
    hidden_sizes=(8, 16),
    hidden_seq_length=8,
    step_batches=(1, 32),
    steps_taken=(0, 40),
    step_repeats=2,
    maml_tasks=(1, 2),
    maml_windows=1,
    maml_length=4,
    maml_repeats=1,
    warmup=0,
    repeats=2,
)


def _cell(model: str, settings: TimingSettings = TINY) -> Cell:
    return Cell("t", "timing", "-", model, "timing", 0, ("timing",), 5_000, settings)


def test_every_model_has_a_stated_complexity() -> None:
    from models import MODELS

    assert set(COMPLEXITY) == set(MODELS)


@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_one_cell_writes_every_metric_at_its_steps(model: str) -> None:
    rows = pd.DataFrame(run(_cell(model)))
    steps = rows.groupby("metric")["step"].apply(sorted).to_dict()
    assert steps["fwd_bwd_ms"] == [8, 32] and steps["peak_mem_mb"] == [8, 32]
    assert steps["fwd_bwd_ms_hidden"] == [8, 16]
    assert steps["step_latency_ms_b1"] == [0, 40] and steps["step_latency_ms_b32"] == [0, 40]
    assert steps["maml_update_ms_vmap"] == [1, 2] and steps["maml_update_ms_loop"] == [1, 2]
    for name in ("slope_T", "slope_T_lo", "slope_T_hi", "slope_hidden", "slope_hidden_lo", "slope_hidden_hi"):
        assert steps[name] == [0]
    for name in ("fwd_bwd_ms", "fwd_bwd_ms_hidden", "step_latency_ms_b1", "maml_update_ms_loop"):
        assert steps[f"{name}_iqr"] == steps[name]  # the spread beside every median
    value = rows.set_index("metric")["value"]
    assert value["slope_T_lo"] <= value["slope_T"] <= value["slope_T_hi"]
    assert abs(value["params"] - 5_000) <= 500 and value["torch_threads"] == 1
    assert (rows["arm"] == "timing").all()
    medians = rows.loc[~rows.metric.str.startswith("slope_") & ~rows.metric.str.endswith("_iqr"), "value"]
    assert (medians > 0).all() and (rows.loc[rows.metric.str.endswith("_iqr"), "value"] >= 0).all()
    mem = rows.loc[rows.metric == "peak_mem_mb"].sort_values("step")["value"].to_numpy()
    assert mem[1] > 2 * mem[0]  # activations for backward grow with T


def test_collection_rows_name_their_task_and_compare_with_raw_stepping() -> None:
    settings = dataclasses.replace(
        TINY, collect_tasks=("pendulum-mass-length",), collect_task_count=1, collect_episodes=2,
        collect_horizon=50, collect_repeats=1, measure_memory=False,
    )  # fmt: skip
    rows = pd.DataFrame(run(_cell("mlp", settings))).set_index("metric")["value"]
    collect, raw = rows["collect_steps_per_s/pendulum-mass-length"], rows["raw_steps_per_s/pendulum-mass-length"]
    assert collect > 1000 and raw > 1000
    assert "peak_mem_mb" not in rows
    table = pd.DataFrame(
        {"protocol": "timing", "task": "-", "model": "mlp", "arm": "timing", "seed": 0, "step": 0,
         "metric": list(rows.index), "value": list(rows.values)}
    )  # fmt: skip
    got = collect_rows(table)
    assert list(got["task"]) == ["pendulum-mass-length"] and list(got["value"]) == [collect]


def test_settings_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"seq_lengths: expected at least 2 distinct values .*got \[64, 64\]"):
        TimingSettings(seq_lengths=(64, 64))
    with pytest.raises(ValueError, match=r"maml_tasks: expected a non-empty list of positive ints, got \[0, 4\]"):
        TimingSettings(maml_tasks=(0, 4))
    with pytest.raises(ValueError, match="repeats: expected a positive int, got 0"):
        TimingSettings(repeats=0)
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda', got 'tpu'"):
        TimingSettings(device="tpu")
    with pytest.raises(ValueError, match=r"steps_taken: expected a non-empty list of ints >= 0, got \[-1\]"):
        TimingSettings(steps_taken=(-1,))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seq_lengths": (8, 16, 8)}, "seq_lengths: expected distinct values, got 8 twice"),
        ({"steps_taken": (0, 0)}, "steps_taken: expected distinct values, got 0 twice"),
        ({"collect_tasks": ("pendulum-mass-length",) * 2},
         "collect_tasks: expected distinct values, got 'pendulum-mass-length' twice"),
        ({"collect_tasks": ("nope",)}, "collect_tasks: unknown value 'nope'; valid choices are ['ant-crippled-leg', "),
        ({"confidence": math.nan}, "confidence: expected a finite number, got nan"),
        ({"seq_lengths": (8, 2_000_000)}, "seq_lengths: expected values of at most 1000000, got 2000000"),
        ({"batch_size": 100_001}, "batch_size: expected at most 100000, got 100001"),
        ({"seq_lengths": [8, 16]}, "seq_lengths: expected a tuple of ints, got [8, 16]"),
        ({"device": 0}, "device: expected a string, got 0"),
    ],
)  # fmt: skip
def test_settings_refuse_duplicates_unknown_tasks_and_out_of_range(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        TimingSettings(**change)
    assert str(info.value).startswith(message)


def test_builtin_suites_have_timing_cells_one_per_model_and_seed() -> None:
    assert PROTOCOLS["timing"].needs_tasks is False
    for name in ("quick", "mujoco", "full"):
        spec = load_suite(name)
        (p,) = [p for p in spec.protocols if p.protocol == "timing"]
        assert p.tasks == () and p.arms == ("timing",)
    with pytest.raises(SpecError, match=r"quick.toml: timing\.repeats: expected an int, got 'many'"):
        load_suite("quick", overrides=["timing.repeats=many"])


def test_suite_run_and_report_show_complexity_and_collection(tmp_path: Path) -> None:
    suite = tmp_path / "t.toml"
    suite.write_text(
        'name = "timing-test"\nmodels = ["mlp", "ssm"]\nseeds = [0]\nparam_budget = 2000\n\n[timing]\n'
        "seq_lengths = [8, 16, 32]\nbatch_size = 2\nhidden_sizes = [8, 16]\nhidden_seq_length = 8\n"
        "steps_taken = [0, 4]\nstep_repeats = 2\nmaml_tasks = [1, 2]\nmaml_windows = 1\nmaml_length = 4\n"
        'maml_repeats = 1\nwarmup = 0\nrepeats = 2\ncollect_tasks = ["pendulum-mass-length"]\n'
        "collect_task_count = 1\ncollect_episodes = 2\ncollect_horizon = 20\ncollect_repeats = 1\n"
    )
    summary = run_suite(load_suite(str(suite)), tmp_path / "run", jobs=1, progress=False)
    assert summary.ok and summary.total == 2
    rows = pd.read_parquet(tmp_path / "run" / "rows.parquet")
    theory = complexity(rows).set_index("model")
    assert theory.loc["ssm", "theory"] == COMPLEXITY["ssm"][0]
    assert theory[["slope_T", "low_T", "high_T", "slope_hidden"]].notna().all().all()
    out = build_report(tmp_path / "run", tmp_path / "report", ReportConfig(reps=50))
    text = (out / "report.md").read_text()
    assert "complexity" in text and COMPLEXITY["ssm"][0] in text
    assert (out / "figures" / "collect_speed.png").exists()
