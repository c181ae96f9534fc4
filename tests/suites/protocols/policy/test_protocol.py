"""The policy protocol: settings checks, registration, and a tiny run for every zoo model."""

import dataclasses
import math

import pytest
import torch

from models import MODELS
from suites.protocols import PROTOCOLS
from suites.protocols.base import Cell
from suites.protocols.policy.protocol import PolicySettings, run
from suites.spec import load_suite
from suites.tasks import tasks_of_family

TINY = PolicySettings(
    meta_iterations=2, meta_batch=2, episodes_per_task=2, horizon=4, test_tasks=2, test_episodes=2,
    eval_inner_steps=2,
)  # fmt: skip


def _cell(model: str, arm: str, task: str = "point-nav-2d", settings: PolicySettings = TINY) -> Cell:
    return Cell("test", "policy", task, model, arm, 0, (arm,), 2000, settings)


@pytest.mark.parametrize("arm", ["maml", "pretrain"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_tiny_run_reports_every_metric_and_step(model, arm):
    rows = run(_cell(model, arm))
    by_metric: dict[str, list[int]] = {}
    for m in rows:
        assert m.arm == arm
        assert math.isfinite(m.value), m
        by_metric.setdefault(m.metric, []).append(m.step)
    assert by_metric == {
        "params": [0],
        "time_meta_train_s": [0],
        "meta_train_return": [0, 1],
        "return": [0, 1, 2],
    }
    params = next(m.value for m in rows if m.metric == "params")
    assert 1800 <= params <= 2200  # the model sized to the budget, plus the log-std
    returns = [m.value for m in rows if m.metric == "return"]
    assert all(-4 * 0.8 <= r <= 0 for r in returns)  # 4 steps, each at most ~0.8 from the goal


def test_same_seed_same_numbers():
    """Given the runner's per-cell torch seed (initialisation), the cell seed fixes everything else."""
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append([m for m in run(_cell("gru", "maml")) if not m.metric.startswith("time")])
    assert runs[0] == runs[1]


def test_run_rejects_a_dynamics_task():
    with pytest.raises(ValueError, match="task: expected a reward-defined task"):
        run(_cell("mlp", "maml", task="pendulum-mass-length"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("inner_steps", 4), ("inner_steps", 0), ("meta_batch", 0), ("gamma", 1.5), ("estimator", "dice"),
     ("inner_lr", -0.1), ("horizon", -1), ("first_order", 1)],
)  # fmt: skip
def test_settings_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        PolicySettings(**{field: value})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("init_std", math.inf, "init_std: expected a finite number, got inf"),
        ("inner_lr", math.inf, "inner_lr: expected a finite number, got inf"),
        ("outer_lr", -math.inf, "outer_lr: expected a finite number, got -inf"),
        ("gamma", math.nan, "gamma: expected a finite number, got nan"),
        ("estimator", ["lvc"], "estimator: expected a string, got ['lvc']"),
        ("init_std", 1e-7, "init_std: expected at least 1e-06, got 1e-07"),
        ("init_std", 1001.0, "init_std: expected at most 1000, got 1001.0"),
        ("inner_lr", 11.0, "inner_lr: expected at most 10, got 11.0"),
        ("test_tasks", 101, "test_tasks: expected at most 100, got 101"),
        ("meta_batch", 100_001, "meta_batch: expected at most 100000, got 100001"),
    ],
)  # fmt: skip
def test_settings_refuse_non_finite_and_out_of_range(field, value, message):
    with pytest.raises(ValueError) as info:
        PolicySettings(**{field: value})
    assert str(info.value) == message


def test_registered_with_the_reward_tasks_and_in_the_suites():
    protocol = PROTOCOLS["policy"]
    assert protocol.arms == ("maml", "pretrain")
    assert protocol.valid_tasks() == sorted(tasks_of_family("reward"))
    expected = {"point-nav-2d", "halfcheetah-vel", "halfcheetah-dir", "ant-dir", "ant-goal"}
    assert set(tasks_of_family("reward")) == expected
    quick = {p.protocol: p for p in load_suite("quick").protocols}["policy"]
    assert quick.tasks == ("point-nav-2d",)
    for suite in ("mujoco", "full"):
        spec = {p.protocol: p for p in load_suite(suite).protocols}["policy"]
        assert set(spec.tasks) == {"halfcheetah-vel", "halfcheetah-dir", "ant-dir", "ant-goal"}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["halfcheetah-dir", "ant-goal"])
def test_tiny_run_on_mujoco_tasks(task):
    rows = run(_cell("gru", "maml", task=task))
    assert {m.metric for m in rows} == {"params", "time_meta_train_s", "meta_train_return", "return"}
    assert all(math.isfinite(m.value) for m in rows)


@pytest.mark.parametrize(
    "changes", [{"first_order": True}, {"estimator": "reinforce"}, {"inner_steps": 2}, {"eval_inner_steps": 0}]
)
def test_training_variants_run(changes):
    settings = dataclasses.replace(TINY, **changes)
    rows = run(_cell("gru", "maml", settings=settings))
    steps = sorted(m.step for m in rows if m.metric == "return")
    assert steps == list(range(settings.eval_inner_steps + 1))
    assert all(math.isfinite(m.value) for m in rows)
