"""Benchmark figures normalised by a calibration operation, and their comparison with a baseline.

On a shared machine every time drifts with the load; the same load slows a fixed calibration
operation timed in the same session, just before each benchmark, with the same clock. The
ratio benchmark median / calibration median is what gets stored (``extra_info["normalised"]``
of pytest-benchmark's JSON) and compared: a hot path regresses when its ratio grows by more than
the tolerance over the baseline's ratio.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

Timer = Callable[[], float]


def calibration_op() -> Callable[[], torch.Tensor]:
    """A fixed mix of the work the hot paths do: small-op dispatch (a 4-layer MLP's forward and
    backward on a (32, 64) batch) and one dense 256 x 256 matmul; about a millisecond. Returns the
    MLP's loss."""
    gen = torch.Generator().manual_seed(0)
    layers = [torch.nn.Linear(64, 64) for _ in range(4)]
    x = torch.randn(32, 64, generator=gen)
    a = torch.randn(256, 256, generator=gen)

    def op() -> torch.Tensor:
        h = x
        for layer in layers:
            h = torch.tanh(layer(h))
        loss = h.square().mean()
        loss.backward()
        a @ a
        return loss.detach()

    return op


def median_time(fn: Callable[[], object], timer: Timer, repeats: int = 15, warmup: int = 2) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = timer()
        fn()
        times.append(timer() - start)
    return statistics.median(times)


def parse_tolerance(text: str) -> float:
    """``"30%"`` or ``"0.3"`` -> 0.3; ValueError naming the option otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"--norm-compare-fail: expected a tolerance like 30% or 0.3, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"--norm-compare-fail: expected a positive tolerance, got {text!r}")
    return value


def load_baseline(path: Path) -> dict[str, float]:
    """Benchmark full name -> normalised ratio, from a JSON that pytest-benchmark saved
    (``--benchmark-json`` or ``--benchmark-save``); benchmarks without the ratio are skipped."""
    if not path.is_file():
        raise ValueError(f"--norm-compare: expected a pytest-benchmark JSON file, got {str(path)!r} (not found)")
    try:
        data = json.loads(path.read_text())
        entries = data["benchmarks"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"--norm-compare: {path} is not a pytest-benchmark JSON (no 'benchmarks' list)") from None
    return {
        b["fullname"]: float(b["extra_info"]["normalised"])
        for b in entries
        if isinstance(b.get("extra_info"), dict) and "normalised" in b["extra_info"]
    }


def latest_saved(root: Path = Path(".benchmarks")) -> Path:
    """The newest JSON under pytest-benchmark's storage folder (what ``--benchmark-save`` wrote)."""
    files = sorted(root.glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ValueError(f"--norm-compare: expected a saved benchmark JSON under {root}/, got none")
    return files[-1]


def regression(name: str, current: float, baseline: dict[str, float], tolerance: float) -> str | None:
    """A one-line message when ``current`` exceeds the baseline ratio by more than ``tolerance``
    (fraction); None when it does not or when the baseline has no figure for ``name``."""
    if name not in baseline:
        return None
    base = baseline[name]
    if current <= base * (1 + tolerance):
        return None
    return (
        f"{name}: normalised time {current:.3f} is {current / base:.2f}x the baseline's {base:.3f} "
        f"(allowed: {1 + tolerance:.2f}x)"
    )
