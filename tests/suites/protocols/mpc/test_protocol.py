"""The mpc protocol on tiny settings: every arm and metric for every model; settings errors."""

from __future__ import annotations

import math

import pytest

from models import MODELS
from suites.protocols import PROTOCOLS
from suites.protocols.base import Cell
from suites.protocols.mpc.protocol import MPCSettings, run

TINY = MPCSettings(
    train_tasks=2,
    episodes_per_task=2,
    support_episodes=1,
    horizon=10,
    sequence_length=5,
    support_windows=2,
    query_windows=2,
    meta_iterations=2,
    meta_batch=2,
    test_tasks=2,
    episodes=1,
    episode_steps=6,
    plan_horizon=3,
    candidates=8,
    cem_iterations=2,
    elites=2,
    adapt_window=3,
    adapt_every=2,
    adapter_every=2,
    oracle_episodes=2,
)
STEPS = TINY.episode_steps


def cell(model: str, arm: str, arms: tuple[str, ...], task: str = "pendulum-mass-length") -> Cell:
    return Cell("tiny", "mpc", task, model, arm, 0, arms, 2000, TINY)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_arm_and_metric_for_every_model(model: str) -> None:
    protocol = PROTOCOLS["mpc"]
    groups = dict(protocol.cell_arms(protocol.arms))
    assert groups == {"maml": ("unadapted", "maml", "maml+adapter", "random"), "oracle": ("oracle",)}
    rows = [r for cell_arm, arms in groups.items() for r in run(cell(model, cell_arm, arms))]
    got: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        assert math.isfinite(r.value), r
        got.setdefault((r.arm, r.metric), []).append(r.step)
    expected = {("random", "return"): [0]}
    for arm in ("unadapted", "maml", "maml+adapter", "oracle"):
        expected |= {
            (arm, "return"): [0],
            (arm, "model_error"): list(range(STEPS)),
            (arm, "plan_ms"): [0],
            (arm, "params"): [0],
        }
    assert got == expected
    values = {(r.arm, r.metric): r.value for r in rows if r.step == 0}
    assert values[("maml", "params")] == values[("oracle", "params")] > 0
    # pendulum rewards are costs: every return is negative and at least -16.27 per step
    for arm in ("unadapted", "maml", "maml+adapter", "oracle", "random"):
        assert -16.3 * STEPS < values[(arm, "return")] < 0


def test_arms_share_starts_and_unadapted_equals_maml_before_the_first_adaptation() -> None:
    """With the first adaptation after the last step, maml and maml+adapter act as unadapted."""
    late = cell("gru", "maml", ("unadapted", "maml", "maml+adapter"))
    settings = MPCSettings(**{**TINY.__dict__, "adapt_window": STEPS, "adapt_every": STEPS, "adapter_every": STEPS})
    rows = run(Cell(**{**late.__dict__, "settings": settings}))
    by_arm = {
        a: [(r.metric, r.step, r.value) for r in rows if r.arm == a and r.metric != "plan_ms"]
        for a in late.reported_arms
    }
    assert by_arm["unadapted"] == by_arm["maml"] == by_arm["maml+adapter"]


def test_rejects_reward_tasks_and_unknown_training_arms() -> None:
    with pytest.raises(ValueError, match="mpc task: expected a dynamics-shift task"):
        run(cell("mlp", "maml", ("maml",), task="point-nav-2d"))
    with pytest.raises(ValueError, match="mpc arm: expected a training arm 'maml' or 'oracle', got 'random'"):
        run(cell("mlp", "random", ("random",)))
    assert "point-nav-2d" not in PROTOCOLS["mpc"].valid_tasks()
    assert "halfcheetah-crippled-joint" in PROTOCOLS["mpc"].valid_tasks()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"candidates": 0}, "candidates: expected a positive number, got 0"),
        ({"planner": "mppi"}, "planner method: expected one of"),
        ({"elites": 100}, "planner elites: expected at most candidates"),
        ({"adapt_window": 500}, "adapt_window: expected at most episode_steps 100, got 500"),
        ({"oracle_episodes": 1}, "oracle_episodes: expected at least 2"),
        # a training setting the windows cannot hold fails when the settings are built, not in the cell
        ({"support_episodes": 4, "episodes_per_task": 2},
         r"^support_episodes: expected between 1 and 1 \(episodes_per_task - 1\), got 4$"),
        ({"adapt_every": 101}, "^adapt_every: expected at most episode_steps 100, got 101$"),
        ({"adapter_every": 101}, "^adapter_every: expected at most episode_steps 100, got 101$"),
        ({"adapt_lr": float("inf")}, "^adapt_lr: expected a finite number or None, got inf$"),
        ({"adapter_lr": float("nan")}, "^adapter_lr: expected a finite number, got nan$"),
        ({"adapt_lr": 11.0}, "^adapt_lr: expected at most 10, got 11.0$"),
        ({"test_tasks": 101}, "^test_tasks: expected at most 100, got 101$"),
        ({"candidates": 2_000_000, "elites": 8}, "^candidates: expected at most 1000000, got 2000000$"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MPCSettings(**kwargs)


def test_the_oracle_arm_needs_episodes_for_its_windows() -> None:
    """The oracle cuts oracle_episodes episodes like the training tasks': checked for suites that run it."""
    settings = MPCSettings(oracle_episodes=2)  # support_episodes 2: no query episode left
    settings.check_arms(("maml", "random"))  # without the oracle arm the field is unused
    with pytest.raises(ValueError, match=r"^oracle_episodes: expected more than support_episodes 2 with the "
                                         r"oracle arm, got 2$"):  # fmt: skip
        settings.check_arms(("maml", "oracle"))
    few = MPCSettings(oracle_episodes=3, query_windows=6)  # 1 query episode x 5 windows of 20 in 100 steps
    with pytest.raises(ValueError, match=r"^query_windows: expected at most 5 \(with the oracle arm, oracle_episodes "
                                         r"- support_episodes 1 x 5 windows of sequence_length 20 in horizon 100\), "
                                         r"got 6$"):  # fmt: skip
        few.check_arms(("oracle",))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["halfcheetah-mass-damping", "halfcheetah-crippled-joint", "ant-crippled-leg"])
def test_mujoco_dynamics_tasks_run_every_arm(task: str) -> None:
    """The MuJoCo tasks' torch rewards, 6- and 8-D action boxes and (ant) early termination."""
    rows = run(cell("gru", "maml", ("unadapted", "maml", "maml+adapter", "random"), task=task))
    rows += run(cell("gru", "oracle", ("oracle",), task=task))
    arms = {r.arm for r in rows if r.metric == "return"}
    assert arms == {"unadapted", "maml", "maml+adapter", "oracle", "random"}
    assert all(math.isfinite(r.value) for r in rows)
    for arm in ("unadapted", "maml", "maml+adapter", "oracle"):
        steps = [r.step for r in rows if r.arm == arm and r.metric == "model_error"]
        assert steps == list(range(len(steps))) and 1 <= len(steps) <= STEPS


def test_a_planning_failure_fails_the_cell_naming_arm_task_episode_and_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import suites.protocols.mpc.protocol as protocol
    from suites.protocols.mpc.planners import PlanningError

    def failing(*args: object, **kwargs: object) -> None:
        raise PlanningError("all 8 candidate returns are non-finite (8 nan) in CEM round 1 of 2", 3)

    monkeypatch.setattr(protocol, "run_episode", failing)
    with pytest.raises(PlanningError, match=r"^control step 3: arm unadapted, task TaskParams\('pendulum-mass-length'"
                                            r".*, episode 0: all 8 candidate returns are non-finite"):  # fmt: skip
        run(cell("mlp", "maml", ("unadapted",)))


def test_the_planner_draws_from_the_cells_seed_shared_by_its_arms(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import suites.protocols.mpc.protocol as protocol

    seeds: list[tuple[int, int]] = []
    real = protocol.Planner

    def spy(config: object, low: object, high: object, seed: int) -> object:
        seeds.append((cell_seed, seed))
        return real(config, low, high, seed=seed)

    monkeypatch.setattr(protocol, "Planner", spy)
    rows = {}
    for cell_seed in (0, 1, 0):
        c = dataclasses.replace(cell("mlp", "maml", ("unadapted", "maml")), seed=cell_seed)
        rows.setdefault(cell_seed, []).append([(r.arm, r.metric, r.step, r.value) for r in run(c)
                                               if r.metric != "plan_ms"])  # fmt: skip
    by_cell = {cs: {s for c, s in seeds if c == cs} for cs in (0, 1)}
    assert len(by_cell[0]) == 1 and len(by_cell[1]) == 1  # one planner stream per seed, for every arm
    assert by_cell[0] != by_cell[1]  # seeds draw their own planner noise
    assert rows[0][0] == rows[0][1]  # and one seed repeats exactly
