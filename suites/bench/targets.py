"""``ssm-metarl bench``: the timing protocol's sweeps, and the project's speed targets.

    ssm-metarl bench                          # timing sweeps of the mujoco suite, seed 0, one job
    ssm-metarl bench --suite quick --models ssm,lstm --set timing.repeats=3
    ssm-metarl bench --device cuda            # the same on a GPU (synchronised timings)
    ssm-metarl bench --targets                # the speed targets, one PASS/FAIL line each
    ssm-metarl bench --targets --suite quick  # ... plus parallel efficiency and the 180 s budget

Sweeps: the suite's ``[timing]`` table runs through the runner with one job (timing cells must
not share the cores with each other), into results/bench/<timestamp>/ like ``run``; a table of
fitted slopes beside the theory (``suites.protocols.timing.protocol.COMPLEXITY``) is printed and the
report built.

Targets (docs/performance.md, "Speed targets"): each is a ratio of two measurements taken side by
side in this process, interleaved, with one torch thread, so load from other processes hits both
alike; the printed figure is the ratio of the medians. The clock is process CPU time on CPU and
synchronised wall time on CUDA (``suites.protocols.timing.measure``). The two suite targets need whole runs:
with ``--suite NAME`` the command times ``ssm-metarl run NAME`` with ``--jobs 1`` and
``--jobs 2`` in fresh directories (subprocesses, wall clock); without it they print as not
measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from meta.vmap_timing import MetaUpdateTiming
from models import MODELS, make_model
from suites.data.throughput import measure as measure_throughput
from suites.protocols.timing.measure import loglog_slope, time_interleaved
from suites.protocols.timing.protocol import TimingSettings, fwd_bwd_fn, maml_update_fn


@dataclasses.dataclass(frozen=True)
class TargetSettings:
    """Sizes and bounds of the speed-target measurements (docs/performance.md, "Speed targets").

    Attributes:
        param_budget: parameters every model is sized to.
        input_dim: input features (23: HalfCheetah observation + action).
        output_dim: output features (17).
        batch_size: sequences per forward+backward call.
        seq_length: T of the ssm-vs-lstm comparison.
        min_speedup: the least acceptable lstm time / ssm time.
        gemm_size: n of the n x n float matrix product timed beside ssm and lstm: the machine's
            peak matmul rate, against which the ssm's matmul FLOPs give its least possible time.
        slope_lengths: T values of the ssm slope fit.
        max_slope: the largest acceptable log-log slope of ssm time against T.
        maml_tasks: tasks per meta-batch of the vmap-vs-loop comparison.
        maml_param_budget: model size of that comparison (the quick suite's 20k: vmap pays off
            where per-op overhead dominates, and less as the work per task grows).
        maml_windows: support (and query) windows per task (the quick suite's support_windows).
        maml_length: steps per window (the quick suite's sequence_length).
        maml_min_speedup: the least acceptable loop time / vmap time.
        collect_tasks: tasks whose collection throughput is compared with raw stepping.
        collect_min_ratio: collect steps/s over raw steps/s must be at least this (within 15%).
        parallel_min_efficiency: time(--jobs 1) / (2 x time(--jobs 2)) must be at least this.
        suite_max_s: the suite run plus its report, with --jobs 2, within this many seconds.
        warmup: untimed calls before each series.
        repeats: timed calls per series (median).
        device: "cpu" or "cuda".
    """

    param_budget: int = 50_000
    input_dim: int = 23
    output_dim: int = 17
    batch_size: int = 32
    seq_length: int = 1024
    min_speedup: float = 5.0
    gemm_size: int = 2048
    slope_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    max_slope: float = 1.15
    maml_tasks: int = 16
    maml_param_budget: int = 20_000
    maml_windows: int = 4
    maml_length: int = 25
    maml_min_speedup: float = 3.0
    collect_tasks: tuple[str, ...] = (
        "pendulum-mass-length", "halfcheetah-mass-damping", "ant-crippled-leg", "point-nav-2d"
    )  # fmt: skip
    collect_min_ratio: float = 0.85
    parallel_min_efficiency: float = 0.90
    suite_max_s: float = 180.0
    warmup: int = 1
    repeats: int = 5
    device: str = "cpu"


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """One target's outcome: a measured value against a bound.

    Attributes:
        name: what is compared.
        value: the measured figure (None: not measured).
        bound: the target value.
        higher_is_better: True for ">= bound", False for "<= bound".
        unit: appended to value and bound ("x", "s", "").
        detail: the measurements behind the figure.
    """

    name: str
    value: float | None
    bound: float
    higher_is_better: bool
    unit: str = ""
    detail: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "NOT MEASURED"
        ok = self.value >= self.bound if self.higher_is_better else self.value <= self.bound
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        """``name: value | target >= bound | PASS (detail)``."""
        op = ">=" if self.higher_is_better else "<="
        value = "-" if self.value is None else f"{self.value:.2f}{self.unit}"
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.name}: {value} | target {op} {self.bound:g}{self.unit} | {self.status}{detail}"


# ---- the targets ---------------------------------------------------------------------------


def matmul_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products (mm, bmm, addmm, convolution, attention) one call of ``fn``
    runs, counted by torch's ``FlopCounterMode``. Elementwise work is not counted, so this over
    any rate is a lower bound on the call's time."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def gemm_fn(size: int, gen: torch.Generator, device: str = "cpu") -> Callable[[], Tensor]:
    """One (size x size) @ (size x size) float32 product: 2 size^3 FLOPs at the machine's best rate."""
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    return lambda: a @ b


def attainable_speedup(other_ms: float, ssm_flops: int, gemm_ms: float, gemm_size: int) -> float:
    """The most the ssm could beat a model taking ``other_ms``: the ssm's matmul FLOPs run at the
    rate of a large square matrix product (2 gemm_size^3 FLOPs in gemm_ms), with nothing else."""
    if ssm_flops <= 0 or gemm_ms <= 0:
        return float("inf")
    least_ssm_ms = ssm_flops / (2 * gemm_size**3 / gemm_ms)
    return other_ms / least_ssm_ms


def ssm_vs_lstm(t: TargetSettings, models: list[str] | tuple[str, ...] = ()) -> TargetResult:
    """lstm time / ssm time, forward+backward at T = seq_length, equal param_budget.

    ``models`` are timed in the same interleaved series (their milliseconds go in the detail), so
    the ratio of any two of them is measured side by side too. So is a large square matrix
    product, the machine's peak matmul rate: the ssm's own matmul FLOPs at that rate are the
    least time any implementation of the same model could take here, and lstm's time over that
    is the most speed-up this machine allows (the detail's "attainable").
    """
    gen = torch.Generator().manual_seed(0)
    names = ["ssm", "lstm", *sorted(set(models) - {"ssm", "lstm"})]
    fns: dict[str, Callable[[], object]] = {}
    for name in names:
        model = make_model(name, t.input_dim, t.output_dim, param_budget=t.param_budget, device=t.device)
        fns[name] = fwd_bwd_fn(model, t.batch_size, t.seq_length, gen, t.device)
    ssm_flops = matmul_flops(fns["ssm"])
    fns["gemm"] = gemm_fn(t.gemm_size, gen, t.device)
    got = time_interleaved(fns, warmup=t.warmup, repeats=t.repeats, device=t.device)
    ratio = got["lstm"].median / got["ssm"].median
    gemm_ms = got["gemm"].ms()
    best = attainable_speedup(got["lstm"].ms(), ssm_flops, gemm_ms, t.gemm_size)
    rate = 2 * t.gemm_size**3 / gemm_ms / 1e6
    return TargetResult(
        f"ssm fwd+bwd speed-up over lstm (T={t.seq_length}, B={t.batch_size}, {t.param_budget} params)",
        ratio, t.min_speedup, True, "x",
        ", ".join(f"{n} {got[n].ms():.1f} ms" for n in names) + f", medians of {t.repeats}; attainable "
        f"{best:.2f}x: ssm matmuls {ssm_flops / 1e9:.2f} GFLOP at the peak rate {rate:.0f} GFLOP/s "
        f"({t.gemm_size}^2 matmul) take {ssm_flops / rate / 1e6:.1f} ms",
    )  # fmt: skip


def ssm_slope(t: TargetSettings) -> TargetResult:
    """Log-log slope of ssm forward+backward time against T over ``slope_lengths``."""
    gen = torch.Generator().manual_seed(0)
    model = make_model("ssm", t.input_dim, t.output_dim, param_budget=t.param_budget, device=t.device)
    fns = {str(T): fwd_bwd_fn(model, t.batch_size, T, gen, t.device) for T in t.slope_lengths}
    got = time_interleaved(fns, warmup=t.warmup, repeats=t.repeats, device=t.device)
    xs = [int(T) for T, st in got.items() for _ in st.times]
    fit = loglog_slope(xs, [v for st in got.values() for v in st.times])
    ms = ", ".join(f"T={T}: {st.ms():.0f} ms" for T, st in got.items())
    return TargetResult(
        f"ssm fwd+bwd log-log slope in T ({t.slope_lengths[0]}..{t.slope_lengths[-1]}, B={t.batch_size})",
        fit.slope, t.max_slope, False, "", f"95% interval [{fit.low:.2f}, {fit.high:.2f}]; {ms}",
    )  # fmt: skip


def maml_vmap_vs_loop(t: TargetSettings, model_name: str) -> TargetResult:
    """Per-task-loop time / vmap time of one MAML meta-update at ``maml_tasks`` tasks.

    The vmapped update at one task is timed in the same series: it splits the vmapped time into
    a fixed cost and a cost per task (``meta.vmap_timing.MetaUpdateTiming``), and the detail's
    "ceiling" is the speed-up with that fixed cost at zero, which no change to the MAML code can
    pass at this workload.
    """
    gen = torch.Generator().manual_seed(0)
    s = TimingSettings(maml_windows=t.maml_windows, maml_length=t.maml_length, device=t.device)
    model = make_model(model_name, t.input_dim, t.output_dim, param_budget=t.maml_param_budget, device=t.device)
    fns = {p: maml_update_fn(model, t.maml_tasks, s, gen, vectorize=p == "vmap") for p in ("vmap", "loop")}
    fns["vmap_one"] = maml_update_fn(model, 1, s, gen, vectorize=True)
    got = time_interleaved(fns, warmup=t.warmup, repeats=t.repeats, device=t.device)
    split = MetaUpdateTiming(model_name, t.maml_tasks, got["vmap"].ms(), got["loop"].ms(), got["vmap_one"].ms())
    return TargetResult(
        f"MAML meta-update vmap speed-up over the loop, {model_name} ({t.maml_tasks} tasks, "
        f"{t.maml_param_budget} params)",
        got["loop"].median / got["vmap"].median, t.maml_min_speedup, True, "x",
        f"vmap {split.vmap_ms:.1f} ms, loop {split.loop_ms:.1f} ms, vmap at 1 task {split.vmap_one_ms:.1f} ms: "
        f"+{split.per_task_ms:.2f} ms per task, ceiling {split.ceiling:.2f}x; {s.maml_windows} windows x "
        f"{s.maml_length} steps per support and query, {s.maml_inner_steps} inner step, second order",
    )  # fmt: skip


def collection(t: TargetSettings, task: str) -> TargetResult:
    """collect steps/s over raw gymnasium steps/s (``suites.data.throughput`` at its default size:
    4 tasks x 8 episodes x 200 steps, the figures of suites/tasks/README.md)."""
    got = measure_throughput(task, repeats=t.repeats)
    return TargetResult(
        f"data collection / raw gymnasium stepping, {task}",
        got.ratio, t.collect_min_ratio, True, "",
        f"collect {got.collect_steps_per_s:.0f} steps/s, raw {got.raw_steps_per_s:.0f} steps/s, "
        f"median of {t.repeats} paired ratios",
    )  # fmt: skip


def time_suite_run(suite: str, jobs: int, folder: Path) -> tuple[float, float]:
    """Wall seconds of ``python -m suites run SUITE --jobs N`` (fresh run and report folders):
    (the whole command, report included; the run phase the command prints)."""
    cmd = [sys.executable, "-m", "suites", "run", suite, "--jobs", str(jobs), "--quiet",
           "--out", str(folder / f"run-j{jobs}"), "--report-dir", str(folder / f"report-j{jobs}")]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    total = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"--suite {suite}: `{' '.join(cmd[1:])}` exited {done.returncode}: {tail[0]}")
    found = re.search(r"failed, in ([0-9.]+) s", done.stdout)
    return total, float(found.group(1)) if found else total


def suite_targets(t: TargetSettings, suite: str | None) -> list[TargetResult]:
    """Parallel efficiency of the run phase and the --jobs 2 run + report time (None: not measured).

    Both runs use one frozen copy of the suite file, so an edit between them cannot change what
    is compared; the --jobs 2 run goes first and its time is printed as soon as it is known.
    """
    from suites.spec import read_suite_table

    eff_name = "joblib parallel efficiency on 2 cores, time(jobs 1) / (2 x time(jobs 2))"
    wall_name = "suite run + report wall time with --jobs 2"
    if suite is None:
        note = "needs whole suite runs: add --suite quick"
        return [
            TargetResult(eff_name, None, t.parallel_min_efficiency, True, "", note),
            TargetResult(wall_name, None, t.suite_max_s, False, " s", note),
        ]
    _, source = read_suite_table(suite)
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        frozen = Path(tmp) / Path(source).name
        frozen.write_text(Path(source).read_text())
        total2, run2 = time_suite_run(str(frozen), 2, Path(tmp))
        print(f"  ({suite} with --jobs 2: {total2:.1f} s in all, run phase {run2:.1f} s; now --jobs 1)", flush=True)
        total1, run1 = time_suite_run(str(frozen), 1, Path(tmp))
    return [
        TargetResult(f"{eff_name}, {suite}", run1 / (2 * run2), t.parallel_min_efficiency, True, "",
                     f"run phase {run1:.1f} s with 1 job, {run2:.1f} s with 2 jobs"),
        TargetResult(f"{wall_name}, {suite}", total2, t.suite_max_s, False, " s",
                     f"whole command incl. start-up and report; {total1:.1f} s with --jobs 1"),
    ]  # fmt: skip


def run_targets(t: TargetSettings, suite: str | None, models: list[str]) -> list[TargetResult]:
    """Measure every target and print its line as soon as it is known (torch threads as set)."""
    steps: list[Callable[[], TargetResult | list[TargetResult]]] = [
        lambda: ssm_vs_lstm(t, models),
        lambda: ssm_slope(t),
        *[(lambda m=m: maml_vmap_vs_loop(t, m)) for m in models],
        *[(lambda task=task: collection(t, task)) for task in t.collect_tasks],
        lambda: suite_targets(t, suite),
    ]
    results: list[TargetResult] = []
    for step in steps:
        got = step()
        for r in got if isinstance(got, list) else [got]:
            print(r.line(), flush=True)
            results.append(r)
    return results


# ---- the sweeps ----------------------------------------------------------------------------


def complexity_table(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The report's complexity table (theory beside fitted slopes), rounded for the terminal."""
    from suites.report import complexity

    return complexity.complexity(rows, confidence).round(3)


def speed_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: median fwd+bwd ms at each T (columns T=...), and the vmap speed-up at the most tasks."""
    from suites.report import complexity

    fb = complexity.medians(rows, "fwd_bwd_ms")
    table = fb.pivot(index="model", columns="step", values="value").round(1)
    table.columns = [f"fwd_bwd_ms T={c}" for c in table.columns]
    speed = complexity.vmap_speedup(rows)
    if not speed.empty:
        most = speed.loc[speed["tasks"] == speed["tasks"].max()].set_index("model")
        table[f"vmap speed-up at {int(speed['tasks'].max())} tasks"] = most["speedup"].round(2)
    return table.reset_index()


def run_sweeps(args: argparse.Namespace) -> int:
    """Run the suite's timing cells with one job, print the tables, build the report."""
    from suites.report import build_report
    from suites.runner import run_suite
    from suites.spec import load_suite

    overrides = list(args.set) + ([f'timing.device="{args.device}"'] if args.device else [])
    spec = load_suite(args.suite or "mujoco", models=_csv(args.models), seeds=args.seeds, overrides=overrides)
    timing_only = tuple(p for p in spec.protocols if p.protocol == "timing")
    if not timing_only:
        raise ValueError(f"--suite {spec.name}: expected a [timing] table in {spec.source}, got none")
    spec = dataclasses.replace(spec, name=f"{spec.name}-bench", protocols=timing_only)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("results") / "bench" / stamp
    summary = run_suite(spec, run_dir, jobs=1, threads=args.threads, progress=not args.quiet)
    rows = pd.read_parquet(run_dir / "rows.parquet")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{spec.name}: {summary.succeeded} cells, {summary.failed} failed, {summary.wall_time_s:.1f} s "
              f"-> {run_dir} (torch threads per cell: {args.threads})")  # fmt: skip
        if not rows.empty:
            print("\ncomplexity: fitted log-log slopes of forward+backward time (theory: slope 1 in T)")
            print(complexity_table(rows).to_string(index=False))
            print("\nspeed (medians over seeds)")
            print(speed_table(rows).to_string(index=False))
    if not args.no_report and not rows.empty:
        print(f"report: {build_report(run_dir, Path(args.report_dir) if args.report_dir else None) / 'report.html'}")
    return 1 if summary.failed else 0


# ---- the command ---------------------------------------------------------------------------


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def run_bench(args: argparse.Namespace) -> int:
    """Timing sweeps of a suite's [timing] table, or (--targets) the speed targets with PASS/FAIL."""
    if args.threads < 1:
        raise ValueError(f"--threads: expected a positive int, got {args.threads}")
    if not args.targets:
        return run_sweeps(args)
    models = _csv(args.models) or list(MODELS)
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"--models: unknown {unknown}; expected any of {sorted(MODELS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: expected a visible CUDA device for cuda, got none")
    t = TargetSettings(device=args.device or "cpu")
    torch.set_num_threads(args.threads)
    print(f"speed targets: torch {torch.__version__}, {args.threads} torch thread(s), "
          f"{os.cpu_count()} cores, device {t.device}; ratios of medians measured side by side")  # fmt: skip
    results = run_targets(t, args.suite, models)
    failed = [r for r in results if r.status == "FAIL"]
    measured = [r for r in results if r.value is not None]
    print(f"{len(measured) - len(failed)} of {len(measured)} measured targets pass"
          + (f"; {len(results) - len(measured)} not measured" if len(measured) < len(results) else ""))  # fmt: skip
    return 1 if failed else 0
