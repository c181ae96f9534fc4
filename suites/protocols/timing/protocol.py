"""The ``timing`` protocol: what each model costs, and how the cost grows.

One cell per model (task "-", arm "timing"); top to bottom:

1. sequence mode, forward + backward of an MSE loss, model sized to the suite's param_budget:
   time (``fwd_bwd_ms``) and peak memory (``peak_mem_mb``) against T (step = T), at batch
   ``batch_size``;
2. the same time against the hidden size at T = ``hidden_seq_length`` (``fwd_bwd_ms_hidden``,
   step = hidden_dim);
3. log-log slopes of both, fitted over every timed repeat, with their t-intervals
   (``slope_T``, ``slope_T_lo``, ``slope_T_hi``, ``slope_hidden``, ...; step 0). Theory
   (``COMPLEXITY``): every model's sequence work is linear in T; its growth in the width d is
   quadratic once the d x d matrices dominate the per-op overhead;
4. step mode: latency of one inference step at batch 1 and 32 from the state reached after n
   steps already taken (``step_latency_ms_b1`` / ``_b32``, step = n): constant in n for every
   model, the transformer included, since its KV cache is bounded by the window;
5. one MAML meta-update (``meta.MetaMAML.meta_update``) against the number of tasks, the vmapped
   path and the per-task loop interleaved (``maml_update_ms_vmap`` / ``_loop``, step = tasks);
6. data-collection throughput of each task in ``collect_tasks`` with raw gymnasium stepping of the
   same env beside it (``suites.data.throughput``): ``collect_steps_per_s/<task>``,
   ``raw_steps_per_s/<task>``, ``collect_over_raw/<task>`` (the task is in the metric name,
   since a timing cell's task column is "-"); the model plays no part, so every model's cell is
   one more repeat.

Every time is the median of ``repeats`` timed calls after ``warmup`` untimed ones, written with
its interquartile range as ``<metric>_iqr`` (same step: the spread). ``suites.protocols.timing.measure``
states the clock, the CUDA synchronisation and what peak memory counts; ``torch_threads``
records the threads the cell ran with. Inputs are seeded Gaussian noise of the shapes the
dynamics protocol uses: the cost does not depend on the values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from meta import MetaMAML, TaskBatch
from models import SequenceModel, count_params, make_model
from suites.data.throughput import measure as measure_throughput
from suites.protocols.base import Cell, Measurement
from suites.protocols.dynamics_training.settings import check_types, require_distinct
from suites.protocols.timing.measure import (
    CLOCKS,
    TimingStats,
    loglog_slope,
    peak_memory_mb,
    time_call,
    time_interleaved,
)
from suites.tasks import TASKS

COMPLEXITY: dict[str, tuple[str, str]] = {
    "ssm": ("O(T d N + T d^2)", "diagonal scan O(T d N) work (state size N per channel) plus per-step projections"),
    "lstm": ("O(T d^2)", "a d x 4d recurrent matrix product per step, sequential in T"),
    "gru": ("O(T d^2)", "a d x 3d recurrent matrix product per step, sequential in T"),
    "transformer": ("O(T W d + T d^2)", "windowed attention over W keys per step plus projections"),
    "mlp": ("O(T d^2)", "per-step feed-forward layers, no recurrence"),
    "neural-state": ("O(T d^2)", "a residual MLP recurrence, a Python loop over T"),
}
"""Model -> (sequence-mode work in T and width d, why). Linear in T for all: slope 1 in T."""


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    """Sizes, repeats and device of the timing protocol.

    Checked when built: types (finite numbers), every int at most its bound in ``TIMING_MAX``,
    and no value twice in a list (a repeated T or width would time the same point twice).

    Attributes:
        seq_lengths: sequence lengths T of the forward+backward sweep (at least two).
        batch_size: sequences per forward+backward call.
        hidden_sizes: hidden_dim values of the width sweep (at least two; divisible by the
            transformer's 4 heads).
        hidden_seq_length: T of the width sweep.
        step_batches: batch sizes of the step-latency measurement (1 and 32: the report's
            ``step_latency_ms_b1`` / ``_b32``).
        steps_taken: steps already taken before the timed step (the state's age).
        step_repeats: timed single steps per point.
        maml_tasks: tasks per meta-batch of the MAML sweep.
        maml_windows: support (and query) windows per task.
        maml_length: steps per window.
        maml_inner_steps: inner SGD steps per meta-update.
        maml_first_order: first-order MAML (no second derivatives).
        maml_repeats: timed meta-updates per point and path.
        collect_tasks: task distributions whose collection throughput is measured (none: skip);
            known task names.
        collect_task_count: tasks per ``collect`` call.
        collect_episodes: episodes per task.
        collect_horizon: steps per episode.
        collect_repeats: interleaved repeats of raw and collect stepping.
        input_dim: input features of the synthetic data (23 = HalfCheetah observation + action).
        output_dim: output features (17 = HalfCheetah observation change).
        warmup: untimed calls before each timed series.
        repeats: timed forward+backward calls per point.
        measure_memory: also record peak memory against T (slower on CPU: every op is tracked).
        device: "cpu" or "cuda" (timings synchronised).
        clock: "auto" (process CPU time on CPU, synchronised wall time on CUDA), "process" or
            "wall"; see ``suites.protocols.timing.measure``.
        confidence: of the slopes' t-intervals.
    """

    seq_lengths: tuple[int, ...] = (64, 256, 1024, 4096)
    batch_size: int = 32
    hidden_sizes: tuple[int, ...] = (32, 64, 128, 256)
    hidden_seq_length: int = 256
    step_batches: tuple[int, ...] = (1, 32)
    steps_taken: tuple[int, ...] = (0, 16, 64, 256)
    step_repeats: int = 50
    maml_tasks: tuple[int, ...] = (1, 4, 16)
    maml_windows: int = 4
    maml_length: int = 25
    maml_inner_steps: int = 1
    maml_first_order: bool = False
    maml_repeats: int = 5
    collect_tasks: tuple[str, ...] = ()
    collect_task_count: int = 2
    collect_episodes: int = 4
    collect_horizon: int = 100
    collect_repeats: int = 3
    input_dim: int = 23
    output_dim: int = 17
    warmup: int = 1
    repeats: int = 5
    measure_memory: bool = True
    device: str = "cpu"
    clock: str = "auto"
    confidence: float = 0.95

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("seq_lengths", "hidden_sizes", "step_batches", "maml_tasks"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name}: expected a non-empty list of positive ints, got {list(values)}")
        for name in ("seq_lengths", "hidden_sizes"):
            if len(set(getattr(self, name))) < 2:
                raise ValueError(f"{name}: expected at least 2 distinct values (for a slope), got "
                                 f"{list(getattr(self, name))}")  # fmt: skip
        if any(n < 0 for n in self.steps_taken) or not self.steps_taken:
            raise ValueError(f"steps_taken: expected a non-empty list of ints >= 0, got {list(self.steps_taken)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and f.name != "warmup" and value < 1:
                raise ValueError(f"{f.name}: expected a positive int, got {value!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup: expected an int >= 0, got {self.warmup!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock: expected one of {list(CLOCKS)}, got {self.clock!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence: expected a value in (0, 1), got {self.confidence!r}")
        for name in ("seq_lengths", "hidden_sizes", "step_batches", "steps_taken", "maml_tasks", "collect_tasks"):
            require_distinct(name, getattr(self, name))
        for name, high in TIMING_MAX.items():
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                if value > high:
                    what = "values of at most" if isinstance(values, tuple) else "at most"
                    raise ValueError(f"{name}: expected {what} {high}, got {value!r}")
        for task in self.collect_tasks:
            if task not in TASKS:
                raise ValueError(f"collect_tasks: unknown value {task!r}; valid choices are {sorted(TASKS)}")


TIMING_MAX: dict[str, int] = {
    "seq_lengths": 1_000_000,
    "batch_size": 100_000,
    "hidden_sizes": 65_536,
    "hidden_seq_length": 1_000_000,
    "step_batches": 100_000,
    "steps_taken": 1_000_000,
    "step_repeats": 100_000,
    "maml_tasks": 10_000,
    "maml_windows": 100_000,
    "maml_length": 1_000_000,
    "maml_inner_steps": 1_000,
    "maml_repeats": 100_000,
    "collect_task_count": 10_000,
    "collect_episodes": 100_000,
    "collect_horizon": 1_000_000,
    "collect_repeats": 100_000,
    "input_dim": 100_000,
    "output_dim": 100_000,
    "warmup": 100_000,
    "repeats": 100_000,
}
"""Upper bounds of the timing settings' ints (each value of a list field), beyond any real sweep."""


def run(cell: Cell) -> list[Measurement]:
    """Run one timing cell (see the module docstring)."""
    s: TimingSettings = cell.settings
    if s.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected a visible CUDA device for 'cuda', got none (torch.cuda.is_available())")
    arm = cell.training_arm
    gen = torch.Generator().manual_seed(cell.seed)
    model = make_model(cell.model, s.input_dim, s.output_dim, param_budget=cell.param_budget, device=s.device)
    out = [
        Measurement(arm, "params", 0, float(count_params(model))),
        Measurement(arm, "hidden_dim", 0, float(model.config.hidden_dim)),
        Measurement(arm, "torch_threads", 0, float(torch.get_num_threads())),
    ]

    # 1. forward + backward against T, and peak memory
    xs, ys = [], []
    for T in s.seq_lengths:
        fn = fwd_bwd_fn(model, s.batch_size, T, gen, s.device)
        stats = time_call(fn, warmup=s.warmup, repeats=s.repeats, device=s.device, clock=s.clock)
        out += _timed(arm, "fwd_bwd_ms", T, stats)
        xs += [T] * len(stats.times)
        ys += list(stats.times)
        if s.measure_memory:
            out.append(Measurement(arm, "peak_mem_mb", T, peak_memory_mb(fn, s.device)))
    out += _slope_rows(arm, "slope_T", xs, ys, s.confidence)

    # 2. forward + backward against the hidden size
    xs, ys = [], []
    for width in s.hidden_sizes:
        sized = make_model(cell.model, s.input_dim, s.output_dim, hidden_dim=width, device=s.device)
        fn = fwd_bwd_fn(sized, s.batch_size, s.hidden_seq_length, gen, s.device)
        stats = time_call(fn, warmup=s.warmup, repeats=s.repeats, device=s.device, clock=s.clock)
        out += _timed(arm, "fwd_bwd_ms_hidden", width, stats)
        xs += [width] * len(stats.times)
        ys += list(stats.times)
    out += _slope_rows(arm, "slope_hidden", xs, ys, s.confidence)

    # 3. step latency against the steps already taken
    for batch in s.step_batches:
        for taken in s.steps_taken:
            fn = step_fn(model, batch, taken, gen, s.device)
            stats = time_call(fn, warmup=s.warmup, repeats=s.step_repeats, device=s.device, clock=s.clock)
            out += _timed(arm, f"step_latency_ms_b{batch}", taken, stats)

    # 4. MAML meta-update against the number of tasks, vmap and loop side by side
    for n in s.maml_tasks:
        fns = {
            path: maml_update_fn(model, n, s, gen, vectorize=(path == "vmap"))
            for path in ("vmap", "loop")
        }
        both = time_interleaved(fns, warmup=s.warmup, repeats=s.maml_repeats, device=s.device, clock=s.clock)
        for path, st in both.items():
            out += _timed(arm, f"maml_update_ms_{path}", n, st)

    # 5. data collection against raw gymnasium stepping
    for task in s.collect_tasks:
        t = measure_throughput(task, s.collect_task_count, s.collect_episodes, s.collect_horizon, s.collect_repeats)
        out += [
            Measurement(arm, f"collect_steps_per_s/{task}", 0, t.collect_steps_per_s),
            Measurement(arm, f"raw_steps_per_s/{task}", 0, t.raw_steps_per_s),
            Measurement(arm, f"collect_over_raw/{task}", 0, t.ratio),
        ]
    return out


def _timed(arm: str, metric: str, step: int, stats: TimingStats) -> list[Measurement]:
    """The median (``metric``) and the interquartile range (``metric_iqr``) in ms."""
    return [Measurement(arm, metric, step, stats.ms()), Measurement(arm, f"{metric}_iqr", step, 1e3 * stats.iqr)]


def _slope_rows(arm: str, name: str, xs: list[int], ys: list[float], confidence: float) -> list[Measurement]:
    fit = loglog_slope(xs, ys, confidence)
    rows = [Measurement(arm, name, 0, fit.slope)]
    if fit.points > 2:
        rows += [Measurement(arm, f"{name}_lo", 0, fit.low), Measurement(arm, f"{name}_hi", 0, fit.high)]
    return rows


def fwd_bwd_fn(
    model: SequenceModel, batch: int, T: int, gen: torch.Generator, device: str = "cpu"
) -> Callable[[], Tensor]:
    """One training step's work without the optimiser: MSE forward over (batch, T) and backward.

    The returned callable gives back the loss (detached), so a caller can check the work was done.

    Shapes:
        x (batch, T, input_dim), targets (batch, T, output_dim).
    """
    x = torch.randn(batch, T, model.input_dim, generator=gen).to(device)
    y = torch.randn(batch, T, model.output_dim, generator=gen).to(device)

    def fn() -> Tensor:
        model.zero_grad(set_to_none=True)
        pred, _ = model(x, model.init_state(batch))
        loss = torch.nn.functional.mse_loss(pred, y)
        loss.backward()
        return loss.detach()

    return fn


def step_fn(
    model: SequenceModel, batch: int, taken: int, gen: torch.Generator, device: str = "cpu"
) -> Callable[[], Tensor]:
    """One inference step (no gradients) from the state reached after ``taken`` steps.

    The state is reached by running sequence mode over ``taken`` steps; each timed call steps
    from that same state, so every call measures the cost at the same state age. The callable
    returns the step's output (batch, output_dim).
    """
    x_t = torch.randn(batch, model.input_dim, generator=gen).to(device)
    with torch.no_grad():
        state = model.init_state(batch)
        if taken:
            history = torch.randn(batch, taken, model.input_dim, generator=gen).to(device)
            _, state = model(history, state)

    def fn() -> Tensor:
        with torch.no_grad():
            y, _ = model(x_t, state)
        return y

    return fn


def maml_update_fn(
    model: SequenceModel, tasks: int, s: TimingSettings, gen: torch.Generator, *, vectorize: bool
) -> Callable[[], float]:
    """One MetaMAML meta-update (inner loop, outer gradient, Adam step) over ``tasks`` tasks.

    Shapes:
        support / query x (tasks, maml_windows, maml_length, input_dim), y the same with
        output_dim features.
    """

    def noise(features: int) -> Tensor:
        return torch.randn(tasks, s.maml_windows, s.maml_length, features, generator=gen).to(s.device)

    batch = TaskBatch(noise(model.input_dim), noise(model.output_dim), noise(model.input_dim), noise(model.output_dim))
    maml = MetaMAML(model, inner_lr=0.01, outer_lr=1e-3, num_inner_steps=s.maml_inner_steps,
                    first_order=s.maml_first_order, vectorize=vectorize)  # fmt: skip

    def fn() -> float:
        return maml.meta_update(batch)

    return fn
