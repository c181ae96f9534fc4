"""Controllers in the control loop: MPC on the true pendulum beats random actions; the model
controller records its errors, adapts on the recent past and never keeps what it adapted; a step
without a finite plan stops the episode with a PlanningError naming the step and the cause."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptation import AdaptationConfig, Adapter
from meta import MetaMAML
from models import make_model
from suites.data import Normalizer
from suites.protocols.mpc import (
    DynamicsController,
    ModelController,
    Planner,
    PlannerConfig,
    RandomController,
    box_bounds,
    run_episode,
)
from suites.protocols.mpc.planners import PlanningError
from suites.tasks import get_distribution
from tests.suites.protocols.mpc.true_pendulum import pendulum_step

PENDULUM = get_distribution("pendulum-mass-length")


def test_mpc_with_the_true_dynamics_beats_random_actions() -> None:
    task = PENDULUM.params(mass=1.2, length=1.1)
    env = PENDULUM.make_raw_env(task)
    low, high = box_bounds(env.action_space)
    mpc, rand = [], []
    for seed in range(3):
        planner = Planner(PlannerConfig("cem", horizon=15, candidates=64, iterations=2), low, high, seed=seed)
        controller = DynamicsController(lambda o, a, s: (pendulum_step(o, a, 1.2, 1.1), ()),
                                        lambda o, a, n: PENDULUM.reward(o, a, n, task), planner)  # fmt: skip
        mpc.append(run_episode(env, controller, 100, seed=seed).total_return)
        rand.append(run_episode(env, RandomController(env.action_space, seed), 100, seed=seed).total_return)
    # measured: MPC about -130 on every start, random actions -400 to -700
    assert max(mpc) < 0 and min(mpc) > max(rand) + 100, (mpc, rand)


def _model_controller(**kwargs: object) -> tuple[ModelController, torch.nn.Module]:
    torch.manual_seed(0)
    model = make_model("gru", 4, 3, hidden_dim=16).eval()
    norm = Normalizer(torch.zeros(4), torch.ones(4), torch.zeros(3), torch.ones(3))
    task = PENDULUM.params(mass=1.0, length=1.0)
    low, high = box_bounds(PENDULUM.make_raw_env(task).action_space)
    planner = Planner(PlannerConfig("random", horizon=3, candidates=8), low, high, seed=0)
    controller = ModelController(model, norm, lambda o, a, n: PENDULUM.reward(o, a, n, task), planner,
                                 **kwargs)  # type: ignore[arg-type]  # fmt: skip
    return controller, model


def test_model_controller_records_one_error_per_step_and_carries_the_state() -> None:
    controller, model = _model_controller()
    env = PENDULUM.make_raw_env(PENDULUM.params(mass=1.0, length=1.0))
    episode = run_episode(env, controller, 12, seed=0)
    assert episode.steps == 12 and len(episode.model_errors) == 12 and len(episode.plan_s) == 12
    # the carried state is the model run over the 12 real inputs from a fresh state
    xs = torch.cat(list(controller.xs), 0)[None]
    with torch.no_grad():
        pred, state = model(xs, model.init_state(1))
    assert torch.allclose(state, controller.state, atol=1e-5)
    ys = torch.cat(list(controller.ys), 0)[None]
    assert np.allclose(episode.model_errors, (pred - ys).pow(2).mean(-1)[0].numpy(), atol=1e-5)


def test_maml_controller_adapts_on_the_last_window_and_leaves_the_model_alone() -> None:
    controller, model = _model_controller(window=4, every=3, maml_steps=2)
    maml = MetaMAML(model, inner_lr=0.5)
    controller.maml = maml
    before = {k: v.clone() for k, v in model.state_dict().items()}
    env = PENDULUM.make_raw_env(PENDULUM.params(mass=1.0, length=1.0))
    run_episode(env, controller, 6, seed=0)  # adapts after steps 4 (no: 4 % 3) ... at step 6
    assert controller.dynamics.weights is not None
    xw, yw = torch.cat(list(controller.xs), 0)[None], torch.cat(list(controller.ys), 0)[None]
    expected = maml.adapt(xw, yw, controller.states[0], num_steps=2, first_order=True)
    for k, v in expected.items():
        assert torch.allclose(controller.dynamics.weights[k], v.detach(), atol=1e-6)
    with torch.no_grad():  # it plans with exactly what functional_call with the same weights computes
        detached = {k: v.detach() for k, v in controller.dynamics.weights.items()}
        for x in (xw, xw[:, 0]):
            got = controller.dynamics.predict(x, controller.states[0])[0]
            assert torch.equal(got, maml.forward_with_weights(x, detached, controller.states[0])[0])
    # adapted weights lower the error on the window they were fitted to
    with torch.no_grad():
        start = controller.states[0]
        err_theta = (model(xw, start)[0] - yw).pow(2).mean()
        err_fast = (maml.forward_with_weights(xw, expected, start)[0] - yw).pow(2).mean()
    assert err_fast < err_theta
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    controller.reset(None)
    assert controller.dynamics.weights is None


def test_adapter_controller_changes_weights_during_the_episode_and_restores_them() -> None:
    controller, model = _model_controller(window=4, every=2)
    adapter = Adapter(model, AdaptationConfig(lr=1e-2, num_steps=1))
    controller.adapter = adapter
    before = {k: v.clone() for k, v in model.state_dict().items()}
    env = PENDULUM.make_raw_env(PENDULUM.params(mass=1.0, length=1.0))
    run_episode(env, controller, 8, seed=0)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    controller.reset(None)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_model_controller_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="window: expected an int >= 1, got 0"):
        _model_controller(window=0)
    model = make_model("mlp", 4, 3, hidden_dim=8)
    with pytest.raises(ValueError, match="at most one of maml and adapter"):
        _model_controller(maml=MetaMAML(model), adapter=Adapter(model))


def test_run_episode_checks_steps() -> None:
    env = PENDULUM.make_raw_env(PENDULUM.params(mass=1.0, length=1.0))
    with pytest.raises(ValueError, match="steps expected an int >= 1, got 0"):
        run_episode(env, RandomController(env.action_space, 0), 0, seed=0)


def test_a_step_without_a_finite_plan_is_a_planning_error_naming_the_step() -> None:
    task = PENDULUM.params(mass=1.0, length=1.0)
    env = PENDULUM.make_raw_env(task)
    low, high = box_bounds(env.action_space)
    calls = {"n": 0}

    def dynamics(o: torch.Tensor, a: torch.Tensor, s: tuple) -> tuple[torch.Tensor, tuple]:
        # the true pendulum for the first 3 control steps (H = 2 rollout steps each), then nan
        calls["n"] += 1
        nxt = pendulum_step(o, a, 1.0, 1.0)
        return (nxt if calls["n"] <= 3 * 2 else torch.full_like(nxt, float("nan"))), ()

    planner = Planner(PlannerConfig("random", horizon=2, candidates=8), low, high, seed=0)
    controller = DynamicsController(dynamics, lambda o, a, n: PENDULUM.reward(o, a, n, task), planner)
    with pytest.raises(PlanningError) as err:
        run_episode(env, controller, 10, seed=0)
    assert err.value.step == 3
    assert str(err.value) == ("control step 3: all 8 candidate returns are non-finite (8 nan) in random "
                              "shooting; finite: the observation (the imagined rollouts diverge)")  # fmt: skip


def test_model_controller_names_what_is_non_finite() -> None:
    controller, model = _model_controller()
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    env = PENDULUM.make_raw_env(PENDULUM.params(mass=1.0, length=1.0))
    with pytest.raises(PlanningError, match=r"^control step 0: .* non-finite: the model's weights$"):
        run_episode(env, controller, 5, seed=0)


def test_a_non_finite_action_is_a_planning_error() -> None:
    env = PENDULUM.make_raw_env(PENDULUM.params(mass=1.0, length=1.0))

    class Broken(RandomController):
        def act(self, obs: np.ndarray) -> np.ndarray:
            return np.full(1, np.nan, dtype=np.float32)

    with pytest.raises(PlanningError, match=r"control step 0: the controller returned a non-finite action \[nan\]"):
        run_episode(env, Broken(env.action_space, 0), 5, seed=0)
