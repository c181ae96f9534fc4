"""Timing as a measurement: warm-up, repeats, median and spread, CUDA sync, peak memory, slopes.

    stats = time_call(fn, warmup=2, repeats=7)          # TimingStats: median, q1, q3, ...
    mb = peak_memory_mb(fn)                             # peak live tensor memory of one call
    fit = loglog_slope([256, 1024, 4096], [a, b, c])   # SlopeFit: slope with a t-interval

What the clocks measure:
- ``"process"``: ``time.process_time``, the CPU time of this process (all its threads). With one
  torch thread it equals the wall time on an idle core, and it does not count time the process
  spends descheduled, so it is the robust clock on a shared machine (the default on CPU).
- ``"wall"``: ``time.perf_counter``. On CUDA the only meaningful clock: the device is
  synchronised (``torch.cuda.synchronize``) before the clock is read at both ends, since kernels
  run asynchronously (pytest-benchmark and a bare clock know nothing of that).

What peak memory measures: on CUDA, ``torch.cuda.max_memory_allocated`` during the call minus
the memory allocated before it; on CPU, the peak total size of the tensor storages that torch
operations create during the call and that are alive at once (inputs and parameters excluded;
kernels' internal scratch buffers are not tensors and are not counted), tracked with a
``TorchDispatchMode``. The resident set size is not used: the C allocator keeps freed memory
resident and hands it out again, so its peak says little about one call.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CLOCKS = ("auto", "process", "wall")


@dataclasses.dataclass(frozen=True)
class TimingStats:
    """Seconds per call over repeated timed calls (after warm-up).

    Attributes:
        times: every timed call, in order (s).
        clock: "process" or "wall" (see the module docstring).
    """

    times: tuple[float, ...]
    clock: str

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def q1(self) -> float:
        """First quartile (numpy's linear interpolation)."""
        return float(np.quantile(self.times, 0.25))

    @property
    def q3(self) -> float:
        return float(np.quantile(self.times, 0.75))

    @property
    def iqr(self) -> float:
        """Interquartile range q3 - q1: the spread, robust to the odd slow call."""
        return self.q3 - self.q1

    @property
    def min(self) -> float:
        return min(self.times)

    def ms(self) -> float:
        """The median in milliseconds."""
        return 1e3 * self.median


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """Least-squares fit of log(y) = intercept + slope * log(x).

    Attributes:
        slope: the growth exponent (1: linear, 2: quadratic).
        low, high: slope -+ t_{(1+c)/2, n-2} x its standard error (NaN with 2 points).
        intercept: of the log-log line.
        points: number of (x, y) pairs fitted.
    """

    slope: float
    low: float
    high: float
    intercept: float
    points: int


def resolve_clock(clock: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"wall"`` on CUDA, ``"process"`` elsewhere; "process" on CUDA is an error."""
    if clock not in CLOCKS:
        raise ValueError(f"clock: expected one of {list(CLOCKS)}, got {clock!r}")
    cuda = torch.device(device).type == "cuda"
    if clock == "auto":
        return "wall" if cuda else "process"
    if clock == "process" and cuda:
        raise ValueError("clock: expected 'wall' or 'auto' on CUDA (process time misses GPU work), got 'process'")
    return clock


def _check_count(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")


def time_call(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    clock: str = "auto",
) -> TimingStats:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Args:
        fn: the work to time; called with no arguments.
        warmup: untimed calls first (allocator caches, lazy initialisation, autotuning).
        repeats: timed calls; report their median and interquartile range.
        device: where ``fn`` runs; on CUDA the device is synchronised around every timed call.
        clock: "auto", "process" or "wall" (module docstring).

    Returns:
        TimingStats of the timed calls.
    """
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    clock = resolve_clock(clock, device)
    read = time.process_time if clock == "process" else time.perf_counter
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        start = read()
        fn()
        if sync is not None:
            sync()
        times.append(read() - start)
    return TimingStats(tuple(times), clock)


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    clock: str = "auto",
) -> dict[str, TimingStats]:
    """Time several functions round-robin (a, b, a, b, ...), so slow phases of a shared machine
    hit all of them alike; their ratios are then fair. Same arguments as ``time_call``."""
    if not fns:
        raise ValueError("fns: expected at least one function, got none")
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_call(fn, warmup=0, repeats=1, device=device, clock=clock).times[0])
    used = resolve_clock(clock, device)
    return {name: TimingStats(tuple(t), used) for name, t in times.items()}


class _LiveTensorMemory(TorchDispatchMode):
    """Sums the sizes of storages created by torch ops while active, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self.live:
                continue  # a view or an in-place result of a storage already counted
            self.live[key] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


def peak_memory_mb(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Peak memory of one call of ``fn`` in MiB (what is counted: see the module docstring).

    Run it apart from timing: on CPU the tracking slows every op down.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with _LiveTensorMemory() as tracker:
        fn()
    return tracker.peak / 2**20


def loglog_slope(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> SlopeFit:
    """Fit y = exp(intercept) * x^slope by least squares on logs, with a t-interval on the slope.

    Args:
        x: positive sizes (T, hidden size); at least two distinct values.
        y: positive costs (times), one per x; repeated x values are fine (one point per repeat).
        confidence: of the interval, in (0, 1).

    Returns:
        SlopeFit; low and high are NaN when there are only two points.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"loglog_slope: x and y expected equal 1-d lengths, got {xs.shape} and {ys.shape}")
    if len(np.unique(xs)) < 2:
        raise ValueError(f"loglog_slope: x expected at least 2 distinct values, got {sorted(set(xs.tolist()))}")
    if (xs <= 0).any() or (ys <= 0).any() or not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("loglog_slope: x and y expected positive finite values, got a zero, negative or non-finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence!r}")
    fit = stats.linregress(np.log(xs), np.log(ys))
    n = len(xs)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 2) * fit.stderr) if n > 2 else math.nan
    return SlopeFit(float(fit.slope), float(fit.slope) - half, float(fit.slope) + half, float(fit.intercept), n)
