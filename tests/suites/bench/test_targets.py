"""``ssm-metarl bench``: target lines, the targets at tiny sizes, the sweeps through the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from suites.bench.targets import TargetResult, TargetSettings, attainable_speedup, matmul_flops, run_targets
from suites.cli import main


def test_target_lines_say_value_bound_and_verdict() -> None:
    fast = TargetResult("speed-up", 6.25, 5.0, True, "x", "a 10 ms, b 62.5 ms")
    assert fast.line() == "speed-up: 6.25x | target >= 5x | PASS  (a 10 ms, b 62.5 ms)"
    assert TargetResult("speed-up", 4.99, 5.0, True, "x").status == "FAIL"
    assert TargetResult("slope", 1.2, 1.15, False).line() == "slope: 1.20 | target <= 1.15 | FAIL"
    assert TargetResult("slope", 1.15, 1.15, False).status == "PASS"
    missing = TargetResult("wall", None, 180, False, " s", "needs --suite")
    assert missing.line() == "wall: - | target <= 180 s | NOT MEASURED  (needs --suite)"


def test_matmul_flops_count_the_products_only() -> None:
    a, b, w = torch.randn(7, 5), torch.randn(5, 3), torch.randn(4, 3)
    assert matmul_flops(lambda: a @ b) == 2 * 7 * 5 * 3
    # a Linear forward and backward: x @ W^T, then the grads of x and of W, each 2 * 7 * 3 * 4
    x = torch.randn(7, 3, requires_grad=True)
    wg = w.clone().requires_grad_()
    assert matmul_flops(lambda: torch.nn.functional.linear(x, wg).tanh().sum().backward()) == 3 * 2 * 7 * 3 * 4
    assert matmul_flops(lambda: (a * 2).exp().sum()) == 0


def test_attainable_speedup_is_the_other_time_over_the_ssm_flops_at_the_gemm_rate() -> None:
    # a 100^3 gemm in 2 ms: 2e6 FLOPs / 2 ms = 1e9 FLOP/s; 4e8 ssm FLOPs take at least 400 ms
    assert attainable_speedup(1000.0, 400_000_000, 2.0, 100) == pytest.approx(2.5)
    assert attainable_speedup(1000.0, 200_000_000, 2.0, 100) == pytest.approx(5.0)
    assert attainable_speedup(1000.0, 0, 2.0, 100) == float("inf")


def test_targets_at_tiny_sizes_print_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    t = TargetSettings(param_budget=3_000, batch_size=2, seq_length=16, slope_lengths=(8, 16, 32), maml_tasks=2,
                       collect_tasks=(), warmup=0, repeats=2, gemm_size=64)  # fmt: skip
    results = run_targets(t, None, ["mlp"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [r.line() for r in results] == lines
    assert len(results) == 5  # ssm vs lstm, ssm slope, mlp vmap vs loop, and the two suite targets
    pattern = re.compile(r".+: (-|[0-9.]+( s|x)?) \| target (>=|<=) [0-9.]+( s|x)? \| (PASS|FAIL|NOT MEASURED)")
    assert all(pattern.fullmatch(line.split("  (")[0]) for line in lines)
    assert [r.status for r in results[-2:]] == ["NOT MEASURED", "NOT MEASURED"]
    assert all(r.value is not None and r.value > 0 for r in results[:3])
    # the other models are timed in the ssm-vs-lstm series too, their milliseconds in its detail
    assert re.fullmatch(
        r"ssm [0-9.]+ ms, lstm [0-9.]+ ms, mlp [0-9.]+ ms, medians of 2; attainable [0-9.]+x: ssm matmuls "
        r"[0-9.]+ GFLOP at the peak rate [0-9]+ GFLOP/s \(64\^2 matmul\) take [0-9.]+ ms",
        results[0].detail,
    )
    assert re.search(r"vmap at 1 task [0-9.]+ ms: \+-?[0-9.]+ ms per task, ceiling -?[0-9.]+x", results[2].detail)


def test_sweeps_run_a_suites_timing_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(
        'name = "s"\nmodels = ["mlp", "gru"]\nseeds = [0, 1]\nparam_budget = 2000\n\n'
        '[dynamics]\ntasks = ["pendulum-mass-length"]\n\n[timing]\n'
        "seq_lengths = [8, 16]\nbatch_size = 2\nhidden_sizes = [8, 16]\nhidden_seq_length = 8\n"
        "steps_taken = [0]\nstep_repeats = 1\nmaml_tasks = [1, 2]\nmaml_windows = 1\nmaml_length = 4\n"
        "maml_repeats = 1\nwarmup = 0\nrepeats = 2\n"
    )
    code = main(["bench", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-report", "--quiet",
                 "--set", "timing.measure_memory=false"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    rows = pd.read_parquet(tmp_path / "run" / "rows.parquet")
    assert set(rows["protocol"]) == {"timing"} and set(rows["seed"]) == {0}  # bench: seed 0, timing only
    assert set(rows["model"]) == {"mlp", "gru"} and "peak_mem_mb" not in set(rows["metric"])
    assert "O(T d^2)" in out and "vmap speed-up at 2 tasks" in out


def test_bench_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nmodels = ["mlp"]\nseeds = [0]\nparam_budget = 2000\n\n'
                     '[dynamics]\ntasks = ["pendulum-mass-length"]\n')  # fmt: skip
    assert main(["bench", "--suite", str(suite), "--no-report"]) == 2
    assert "error: --suite s: expected a [timing] table" in capsys.readouterr().err
    assert main(["bench", "--targets", "--models", "mlp,nope"]) == 2
    assert "error: --models: unknown ['nope']" in capsys.readouterr().err
