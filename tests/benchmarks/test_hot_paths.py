"""The hot paths under pytest-benchmark, grouped for ``--benchmark-group-by=group``.

Groups: fwd_bwd (each model's sequence forward+backward, B=8, T=128, 20k parameters), step (one
inference step at batch 1), maml_vmap (one vmapped meta-update over 8 tasks), collect (seeded
random-policy collection), runner (``execute_cell`` around a protocol that does nothing), and
calibration (the normalising operation itself). Commands: tests/benchmarks/conftest.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from models import MODELS, make_model
from suites.data import collect
from suites.protocols import PROTOCOLS, Cell, Measurement, Protocol
from suites.protocols.timing.protocol import TimingSettings, fwd_bwd_fn, maml_update_fn, step_fn
from suites.runner import execute_cell
from suites.tasks import get_distribution
from tests.benchmarks.normalised import calibration_op

BUDGET, IN, OUT = 20_000, 23, 17
Normalised = Callable[..., Any]


@pytest.mark.benchmark(group="fwd_bwd")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fwd_bwd(normalised: Normalised, name: str) -> None:
    model = make_model(name, IN, OUT, param_budget=BUDGET)
    loss = normalised(fwd_bwd_fn(model, 8, 128, torch.Generator().manual_seed(0)))
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.benchmark(group="step")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_batch1(normalised: Normalised, name: str) -> None:
    model = make_model(name, IN, OUT, param_budget=BUDGET)
    y = normalised(step_fn(model, 1, 64, torch.Generator().manual_seed(0)), rounds=50)
    assert y.shape == (1, OUT) and torch.isfinite(y).all()


@pytest.mark.benchmark(group="maml_vmap")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_maml_vmap_update(normalised: Normalised, name: str) -> None:
    model = make_model(name, IN, OUT, param_budget=BUDGET)
    settings = TimingSettings(maml_windows=2, maml_length=16)
    before = [p.detach().clone() for p in model.parameters()]
    loss = normalised(maml_update_fn(model, 8, settings, torch.Generator().manual_seed(0), vectorize=True))
    assert math.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))  # Adam stepped


@pytest.mark.benchmark(group="collect")
def test_collect_pendulum(normalised: Normalised) -> None:
    dist = get_distribution("pendulum-mass-length")
    tasks = dist.test_tasks(2)
    data = normalised(lambda: collect(dist, tasks, episodes=4, horizon=100, seed=0))
    assert data.inputs.shape == (2, 4, 100, 4)  # [cos, sin, velocity, torque]
    assert torch.equal(data.inputs, collect(dist, tasks, episodes=4, horizon=100, seed=0).inputs)


@pytest.mark.benchmark(group="collect")
def test_collect_point_nav(normalised: Normalised) -> None:
    # the vectorised random-policy path: a 3 us step, so collection overhead shows at once
    dist = get_distribution("point-nav-2d")
    tasks = dist.test_tasks(4)
    data = normalised(lambda: collect(dist, tasks, episodes=8, horizon=100, seed=0))
    assert data.inputs.shape == (4, 8, 100, 4)  # [x, y, action x, action y]
    assert torch.equal(data.inputs, collect(dist, tasks, episodes=8, horizon=100, seed=0).inputs)


def _noop(cell: Cell) -> list[Measurement]:
    return [Measurement(cell.training_arm, "params", 0, 0.0)]


@pytest.mark.benchmark(group="runner")
def test_runner_overhead_per_cell(normalised: Normalised, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noop = Protocol("noop", TimingSettings, ("x",), _noop, lambda: (), needs_tasks=False)
    monkeypatch.setitem(PROTOCOLS, "noop", noop)
    cell = Cell("bench", "noop", "-", "mlp", "x", 0, ("x",), BUDGET, TimingSettings())

    def one() -> None:
        record = execute_cell(cell, str(tmp_path), threads=1)
        assert record["status"] == "ok", record["error"]

    normalised(one, rounds=20)


@pytest.mark.benchmark(group="calibration")
def test_calibration_op(normalised: Normalised) -> None:
    loss = normalised(calibration_op(), rounds=20)
    assert loss.ndim == 0 and 0 < float(loss) < 1  # the mean square of tanh outputs
