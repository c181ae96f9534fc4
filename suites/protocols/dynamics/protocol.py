"""The ``dynamics`` protocol: meta-learn a next-observation-change model and measure adaptation.

For one cell (task, model, arm, seed), top to bottom:

1. collect seeded random-policy episodes on training and held-out test tasks; normalise with
   statistics of the training tasks only;
2. train the model for ``meta_iterations`` steps on windows of ``sequence_length`` steps:
   ``maml`` with MetaMAML (Finn et al. 2017), ``pretrain`` jointly on support and query windows of
   the same tasks with the same number of gradient steps and no inner loop
   (``suites.protocols.dynamics_training.train``: a model another cell of the run already trained from the same
   task, model, seed and training settings, e.g. the mpc protocol's, is loaded, not retrained);
3. on held-out tasks: query MSE after k = 0..K inner SGD steps on the support windows
   (``query_mse``, step = k); the one-step error along a stream whose task switches mid-episode,
   without (``maml``, ``pretrain``) and with the Adapter updating online (``maml+adapter``)
   (``online_mse``, step = time relative to the switch); wall times and the parameter count.

Evaluation never changes the trained weights: MAML adapts functional copies, and the Adapter runs
inside ``session()``, which restores the weights after each stream.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time

import numpy as np
import torch
from torch import Tensor

from adaptation import AdaptationConfig, Adapter
from meta import MetaMAML, Task
from models import SequenceModel, count_params
from suites.data import Normalizer, TaskData, collect, collect_switching_stream, fit_normalizer
from suites.protocols.base import Cell, Measurement
from suites.protocols.dynamics_training.settings import MAX_LR, TrainingSettings, require_at_most, require_positive
from suites.protocols.dynamics_training.train import (
    ModelStore,
    TrainingKey,
    Windows,
    masked_mse,
    train_dynamics,
    training_data,
)
from suites.tasks import TaskDistribution, TaskParams, get_distribution
from suites.tasks.spaces import MAX_TEST_TASKS


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicsSettings(TrainingSettings):
    """Settings of the dynamics protocol: the training fields (``TrainingSettings``) and its own.

    Held-out tasks are collected and cut into windows like the training tasks (``episodes_per_task``,
    ``horizon``, ``support_episodes``, ``sequence_length``), and test-time k-step adaptation
    takes inner SGD steps at ``inner_lr``. Besides the training fields' checks, every field here is
    positive and at most its bound in ``DYNAMICS_MAX`` (``test_tasks``: the held-out pool).

    Attributes:
        test_tasks: held-out tasks evaluated per cell.
        eval_inner_steps: K; query MSE is recorded after 0..K inner steps.
        log_every: record the training loss every this many iterations.
        streams: held-out task-switch streams for the online error.
        stream_horizon: steps per stream.
        switch_at: the step at which a stream's task switches.
        adapter_window: steps per online Adapter update (and prediction chunk); at most
            ``stream_horizon``.
        adapter_lr: Adapter learning rate.
        adapter_optimizer: Adapter optimiser, "sgd" or "adam". SGD by default, like the inner
            loop that meta-trained the initialisation: Adam's first steps move every weight by
            about lr, which makes the online error after a task switch 2-3x larger on the quick
            suite.
        adapter_steps: Adapter steps per window.
        timing_repeats: repetitions of the adaptation / step latency measurements (median).
    """

    # this protocol's defaults of the training fields that have no common one
    train_tasks: int = 32
    sequence_length: int = 25
    meta_iterations: int = 100
    inner_lr: float = 0.1

    test_tasks: int = 8
    eval_inner_steps: int = 3
    log_every: int = 10
    streams: int = 4
    stream_horizon: int = 200
    switch_at: int = 100
    adapter_window: int = 10
    adapter_lr: float = 0.03
    adapter_optimizer: str = "sgd"
    adapter_steps: int = 2
    timing_repeats: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, (name for name in self.protocol_fields() if name != "adapter_optimizer"))
        require_at_most(self, DYNAMICS_MAX)
        if self.adapter_optimizer not in ("sgd", "adam"):
            raise ValueError(f"adapter_optimizer: expected 'sgd' or 'adam', got {self.adapter_optimizer!r}")
        if self.switch_at >= self.stream_horizon:
            raise ValueError(
                f"switch_at: expected less than stream_horizon {self.stream_horizon}, got {self.switch_at}"
            )
        if self.adapter_window > self.stream_horizon:
            raise ValueError(f"adapter_window: expected at most stream_horizon {self.stream_horizon}, "
                             f"got {self.adapter_window}")  # fmt: skip


DYNAMICS_MAX: dict[str, float] = {
    "test_tasks": MAX_TEST_TASKS,
    "eval_inner_steps": 1_000,
    "log_every": 10_000_000,
    "streams": 10_000,
    "stream_horizon": 1_000_000,
    "adapter_lr": MAX_LR,
    "adapter_steps": 1_000,
    "timing_repeats": 100_000,
}
"""Upper bounds of the dynamics protocol's own fields (``test_tasks``: the held-out pool's size)."""


def run(cell: Cell) -> list[Measurement]:
    """Run one dynamics cell (see the module docstring)."""
    s: DynamicsSettings = cell.settings

    # 1-2. the trained model (trained here, or by another cell of the run that needed the same one)
    key = TrainingKey(cell.task, cell.model, cell.param_budget, cell.seed, cell.training_arm, s)
    trained = train_dynamics(key, ModelStore(cell.store) if cell.store else None)
    model, normalizer = trained.model, trained.normalizer
    # training rows go under the cell's arm only: arms that reuse its training do not repeat them
    out = [
        Measurement(cell.training_arm, "params", 0, float(count_params(model))),
        Measurement(cell.training_arm, "time_meta_train_s", 0, trained.train_time_s),
    ]
    out += [Measurement(cell.training_arm, "meta_train_loss", it, loss) for it, loss in trained.curve(s.log_every)]

    # 3. held-out evaluation, on held-out data normalised with the training statistics
    test_data, streams = _cell_data(cell.task, s, cell.seed)
    test = Windows.from_data(normalizer.apply(test_data), s)
    maml = MetaMAML(model, inner_lr=s.inner_lr, outer_lr=s.outer_lr, num_inner_steps=s.inner_steps,
                    first_order=s.first_order, loss_fn=masked_mse)  # fmt: skip
    query_curve = _query_mse(maml, test, s)
    adapt_ms, step_ms = _latencies(maml, test, s)
    for arm in cell.reported_arms:
        with_adapter = arm.endswith("+adapter")
        if not with_adapter:
            out += [Measurement(arm, "query_mse", k, v) for k, v in enumerate(query_curve)]
        errors = _online_errors(model, streams, s, with_adapter)
        out += [Measurement(arm, "online_mse", t - s.switch_at, e) for t, e in enumerate(errors)]
        out += [Measurement(arm, "time_adapt_ms", 0, adapt_ms), Measurement(arm, "time_step_ms", 0, step_ms)]
    return out


@functools.lru_cache(maxsize=8)
def _cell_data(task: str, s: DynamicsSettings, seed: int) -> tuple[TaskData, list[tuple[Tensor, Tensor, Tensor]]]:
    """Held-out data and the normalised switching streams of one cell.

    They depend only on the task, the settings and the seed, not on the model or the arm, so a
    worker process that runs several cells of one seed collects them once (all seeded; nothing
    downstream writes into them, and no global random stream is used).
    """
    dist = get_distribution(task)
    test_params = dist.test_tasks(s.test_tasks)
    test_data = collect(dist, test_params, s.episodes_per_task, s.horizon, seed=10_000 + seed)
    normalizer = fit_normalizer(training_data(task, seed, s))
    return test_data, _streams(dist, test_params, normalizer, s, seed=20_000 + seed)


def _query_mse(maml: MetaMAML, test: Windows, s: DynamicsSettings) -> list[float]:
    """Mean over held-out tasks of the query MSE after k = 0..K inner steps."""
    per_task = []
    for i in range(test.support_x.shape[0]):
        task = Task(test.support_x[i], test.support_y[i], test.query_x[i], test.query_y[i])
        per_task.append(maml.evaluate(task, steps=range(s.eval_inner_steps + 1)))
    return [float(v) for v in np.mean(per_task, axis=0)]


def _latencies(maml: MetaMAML, test: Windows, s: DynamicsSettings) -> tuple[float, float]:
    """Median ms of one k-shot adaptation (K inner steps) and of one batch-1 inference step."""
    model = maml.model
    sx, sy = test.support_x[0, : s.support_windows], test.support_y[0, : s.support_windows]
    adapt, step = [], []
    for _ in range(s.timing_repeats):
        t0 = time.perf_counter()
        maml.adapt(sx, sy, num_steps=s.eval_inner_steps)
        adapt.append(time.perf_counter() - t0)
    x = test.query_x[0, 0, :1]  # (1, D)
    with torch.no_grad():
        state = model.init_state(1)
        for _ in range(s.timing_repeats * 5):
            t0 = time.perf_counter()
            _, state = model(x, state)
            step.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(adapt), 1e3 * statistics.median(step)


def _streams(
    dist: TaskDistribution, test_params: list[TaskParams], normalizer: Normalizer, s: DynamicsSettings, seed: int
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Normalised (x, y, starts) streams of shape (1, stream_horizon, D) whose task switches at switch_at."""
    streams = []
    for i in range(s.streams):
        a, b = test_params[i % len(test_params)], test_params[(i + 1) % len(test_params)]
        stream = collect_switching_stream(dist, a, b, s.stream_horizon, s.switch_at, seed=seed + i)
        data = normalizer.apply(stream)
        streams.append((data.inputs[0], data.targets[0], data.starts[0]))  # (1, T, D), (1, T)
    return streams


def _online_errors(model: SequenceModel, streams: list[tuple[Tensor, Tensor, Tensor]], s: DynamicsSettings,
                   with_adapter: bool) -> list[float]:  # fmt: skip
    """Per-step squared error (mean over streams and features) of one-step-ahead predictions.

    The stream is processed in windows of ``adapter_window`` steps with the state carried. Each
    window is predicted with the current weights first; with the Adapter, the model then takes
    ``adapter_steps`` steps on that window (its targets are observed now) before the next window.
    """
    if not with_adapter:
        # the weights never change, so the streams run side by side as one batch
        x, y, starts = (torch.cat(parts) for parts in zip(*streams, strict=True))
        with torch.no_grad():
            pred = _windowed(model, x, starts, s.adapter_window)
        return (pred - y).pow(2).mean(-1).mean(0).tolist()
    config = AdaptationConfig(lr=s.adapter_lr, num_steps=s.adapter_steps, optimizer=s.adapter_optimizer,
                              grad_clip_norm=1.0)  # fmt: skip
    adapter = Adapter(model, config, strategy="online")
    errors = []
    for x, y, starts in streams:
        with adapter.session():
            state = model.init_state(1)
            per_step = []
            for start in range(0, x.shape[1], s.adapter_window):
                window = slice(start, start + s.adapter_window)
                xw, yw, rw = x[:, window], y[:, window], starts[:, window]
                # the prediction at the weights the window arrived to, then adaptation on it
                pred, state, _, _ = adapter.predict_then_update(xw, yw, state, reset=_any_reset(rw))
                per_step.append((pred - yw).pow(2).mean(-1)[0])
            errors.append(torch.cat(per_step))
    return torch.stack(errors).mean(0).tolist()


def _windowed(model: SequenceModel, x: Tensor, starts: Tensor, window: int) -> Tensor:
    """The model's outputs over (B, T, D) inputs, run ``window`` steps at a time with the state carried."""
    state = model.init_state(x.shape[0])
    outputs = []
    for start in range(0, x.shape[1], window):
        part = slice(start, start + window)
        pred, state = model(x[:, part], state, reset=_any_reset(starts[:, part]))
        outputs.append(pred)
    return torch.cat(outputs, dim=1)


def _any_reset(reset: Tensor) -> Tensor | None:
    """``reset``, or None when it resets nowhere: the same outputs, without the reset path's cost."""
    return reset if bool(reset.any()) else None
