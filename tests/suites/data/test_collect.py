"""Data collection: shapes, masks, consistency with the env, determinism, policies, bad input."""

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from suites.data import collect, collect_switching_stream
from suites.tasks import TaskDistribution, get_distribution
from suites.tasks.pendulum import PendulumMassLengthEnv
from suites.tasks.spaces import ChoiceSpace


def _goal_seeker(goals: np.ndarray, noise: float = 0.01) -> Any:
    rng = np.random.default_rng(0)

    def policy(obs: np.ndarray) -> np.ndarray:
        assert obs.dtype == np.float32 and obs.shape == (len(goals), 2)
        step = (goals - obs) + noise * rng.standard_normal(obs.shape)
        return np.clip(step, -0.1, 0.1).astype(np.float32)

    return policy


def test_shapes_dtypes_and_layout() -> None:
    dist = get_distribution("pendulum-mass-length")
    tasks = dist.sample(3, np.random.default_rng(0))
    data = collect(dist, tasks, episodes=4, horizon=25, seed=0)
    assert data.inputs.shape == (3, 4, 25, 3 + 1) and data.inputs.dtype == torch.float32
    assert data.targets.shape == (3, 4, 25, 3) and data.targets.dtype == torch.float32
    assert data.rewards.shape == data.starts.shape == (3, 4, 25)
    assert data.starts.dtype == torch.bool
    assert data.tasks == tuple(tasks) and (data.obs_dim, data.act_dim) == (3, 1)
    assert data.starts[..., 0].all() and not data.starts[..., 1:].any()  # pendulum never ends
    # inputs = [obs, action], targets = next_obs - obs: consecutive steps chain up.
    obs = data.inputs[..., :3]
    torch.testing.assert_close(obs[..., 1:, :] - obs[..., :-1, :], data.targets[..., :-1, :])
    actions = data.inputs[..., 3]
    assert actions.abs().max() <= 2.0 and actions.std() > 0.5  # uniform on [-2, 2]
    # The recorded rewards are the task's reward of the recorded transitions.
    r = dist.reward(obs, data.inputs[..., 3:], obs + data.targets, tasks[0])
    torch.testing.assert_close(r[0], data.rewards[0], rtol=1e-5, atol=1e-5)


def test_episode_starts_after_termination() -> None:
    dist = get_distribution("point-nav-2d")
    task = dist.params(goal_x=0.25, goal_y=-0.15)
    goals = np.tile([[0.25, -0.15]], (3, 1))
    data = collect(dist, [task], episodes=3, horizon=30, seed=0, policy=_goal_seeker(goals))
    starts = data.starts[0]
    assert starts[:, 0].all() and starts[:, 1:].any()
    obs = data.inputs[0, :, :, :2]
    # Every start is at the origin, and the step before it reached the goal.
    assert (obs[starts] == 0).all()
    t_idx = starts[:, 1:].nonzero()
    for e, t in t_idx.tolist():
        reached = obs[e, t] + data.targets[0, e, t]
        assert (reached - torch.tensor([0.25, -0.15])).abs().max() < 0.01


def test_vectorised_point_nav_path_equals_the_env_loop() -> None:
    dist = get_distribution("point-nav-2d")
    task = dist.params(goal_x=-0.3, goal_y=0.4)
    goals = np.tile([[-0.3, 0.4]], (4, 1))
    fast = collect(dist, [task], 4, 40, seed=1, policy=_goal_seeker(goals))
    slow = collect(dist, [task], 4, 40, seed=1, policy=_goal_seeker(goals), reference=True)
    assert fast.starts[:, :, 1:].any()  # terminations happened and were handled alike
    for field in ("inputs", "targets", "starts", "rewards"):
        assert torch.equal(getattr(fast, field), getattr(slow, field)), field
    tasks = dist.sample(2, np.random.default_rng(0))
    a, b = collect(dist, tasks, 3, 20, seed=2), collect(dist, tasks, 3, 20, seed=2, reference=True)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.rewards, b.rewards)


def test_vectorised_random_path_batches_all_tasks_and_equals_the_lockstep_loop() -> None:
    # The default random policy on point-nav steps one vectorised env of K * E rows (tasks
    # major); the reference steps each task's E envs in lockstep. Goals at and near the origin
    # make random walks end episodes (seed 10 ends some in every task), so resets at every
    # row offset of the batch are compared too.
    base = get_distribution("point-nav-2d")
    built: list[list[Any]] = []

    def spy(rows: list[Any]) -> Any:
        built.append(rows)
        assert base.vector_env is not None
        return base.vector_env(rows)

    dist = dataclasses.replace(base, vector_env=spy)
    tasks = [base.params(goal_x=0.0, goal_y=0.0), base.params(goal_x=0.02, goal_y=-0.03)]
    tasks.append(base.params(goal_x=-0.01, goal_y=0.01))
    fast = collect(dist, tasks, 8, 250, seed=10)
    assert built == [[t for t in tasks for _ in range(8)]]  # one env, E rows per task in order
    slow = collect(dist, tasks, 8, 250, seed=10, reference=True)
    assert len(built) == 1  # the reference never touches the vectorised env
    for k in range(len(tasks)):
        assert fast.starts[k, :, 1:].any(), k  # every task had episodes end within the row
    for field in ("inputs", "targets", "starts", "rewards"):
        assert torch.equal(getattr(fast, field), getattr(slow, field)), field
    assert fast.tasks == slow.tasks == tuple(tasks)


@pytest.mark.parametrize("name", ["pendulum-mass-length", "ant-dir", "cartpole"])
def test_open_loop_random_path_equals_the_lockstep_loop(name: str) -> None:
    # The random policy runs each env's row alone; the reference steps all envs in lockstep
    # through the policy interface. Ant and CartPole episodes end early: resets must agree.
    dist = _cartpole_dist() if name == "cartpole" else get_distribution(name)
    tasks = [dist.params(variant=0)] if name == "cartpole" else dist.test_tasks(2)
    horizon = 40 if name == "ant-dir" else 60
    fast = collect(dist, tasks, 3, horizon, seed=4)
    slow = collect(dist, tasks, 3, horizon, seed=4, reference=True)
    if name != "pendulum-mass-length":
        assert fast.starts[..., 1:].any()
    for field in ("inputs", "targets", "starts", "rewards"):
        assert torch.equal(getattr(fast, field), getattr(slow, field)), field


@pytest.mark.parametrize("name", ["pendulum-mass-length", "point-nav-2d"])
def test_same_seed_is_bit_identical_and_seeds_differ(name: str) -> None:
    dist = get_distribution(name)
    tasks = dist.sample(2, np.random.default_rng(0))
    a, b = collect(dist, tasks, 3, 20, seed=5), collect(dist, tasks, 3, 20, seed=5)
    for field in ("inputs", "targets", "starts", "rewards"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    c = collect(dist, tasks, 3, 20, seed=6)
    assert not torch.equal(a.inputs, c.inputs)
    # Episodes of one task differ from each other (separately seeded resets and actions).
    assert not torch.equal(a.inputs[0, 0], a.inputs[0, 1])


def test_mujoco_collection_is_deterministic_and_restores_tasks() -> None:
    dist = get_distribution("halfcheetah-mass-damping")
    t0, t1 = (
        dist.params(mass_scale=1.4, damping_scale=0.6),
        dist.params(mass_scale=0.7, damping_scale=1.3),
    )
    a = collect(dist, [t0, t1], 2, 15, seed=3)
    b = collect(dist, [t1, t1], 2, 15, seed=3)
    # Task 1 gives the same data whether the env pool ran task 0 or task 1 before it.
    assert torch.equal(a.inputs[1], b.inputs[1]) and torch.equal(a.targets[1], b.targets[1])
    assert not torch.equal(a.targets[0], b.targets[0])
    assert torch.equal(collect(dist, [t0, t1], 2, 15, seed=3).targets, a.targets)


def test_plugged_in_policy_is_called_with_the_batch_and_recorded() -> None:
    dist = get_distribution("pendulum-mass-length")
    seen = []

    def policy(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        return np.clip(-obs[:, 2:3], -2, 2)  # damp the swing

    data = collect(dist, dist.test_tasks(1), episodes=5, horizon=10, seed=0, policy=policy)
    assert len(seen) == 10 and seen[0].shape == (5, 3) and seen[0].dtype == np.float32
    np.testing.assert_array_equal(data.inputs[0, :, 0, :3].numpy(), seen[0])
    torch.testing.assert_close(data.inputs[0, :, :, 3], (-data.inputs[0, :, :, 2]).clamp(-2, 2))


class _CartPoleTask(CartPoleEnv):
    """CartPole with a no-op task, to exercise discrete actions."""

    def __init__(self, variant: int = 0) -> None:
        super().__init__()
        self.task = variant

    def set_task(self, params: Any) -> None:
        self.task = params


def _cartpole_dist() -> TaskDistribution:
    return TaskDistribution(
        name="cartpole-test",
        family="dynamics",
        env_id="CartPole-v1",
        env_class=_CartPoleTask,
        space=ChoiceSpace(name="variant", train=(0,)),
        horizon=50,
        reward_fn=lambda o, a, n, t: o[..., 0] * 0 + 1,
        source="test",
    )


def test_discrete_actions_are_one_hot_and_episodes_restart() -> None:
    dist = _cartpole_dist()
    data = collect(dist, [dist.params(variant=0)], episodes=3, horizon=60, seed=0)
    assert (data.obs_dim, data.act_dim) == (4, 2)
    onehot = data.inputs[..., 4:]
    assert ((onehot == 0) | (onehot == 1)).all() and (onehot.sum(-1) == 1).all()
    assert 0.3 < onehot[..., 1].mean() < 0.7
    assert data.starts[0, :, 1:].any()  # random CartPole falls within 60 steps
    with pytest.raises(ValueError, match=r"policy expected 3 integer actions of shape \(3,\)"):
        collect(dist, [dist.params(variant=0)], 3, 5, 0, policy=lambda o: np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"policy actions expected in \[0, 1\]"):
        collect(dist, [dist.params(variant=0)], 3, 5, 0, policy=lambda o: np.full(3, 2))


def test_bad_inputs_name_the_field() -> None:
    dist = get_distribution("pendulum-mass-length")
    tasks = dist.test_tasks(1)
    with pytest.raises(ValueError, match=r"collect\('pendulum-mass-length'\): horizon expected an int >= 1, got 0"):
        collect(dist, tasks, 2, 0, 0)
    with pytest.raises(ValueError, match="episodes expected an int >= 1, got 0"):
        collect(dist, tasks, 0, 5, 0)
    with pytest.raises(ValueError, match="seed expected an int >= 0, got -1"):
        collect(dist, tasks, 2, 5, -1)
    with pytest.raises(ValueError, match="tasks expected at least one task"):
        collect(dist, [], 2, 5, 0)
    with pytest.raises(ValueError, match=r"parameter length expected in \[0.5, 2.0\], got 9.0"):
        collect(dist, [{"mass": 1.0, "length": 9.0}], 2, 5, 0)
    with pytest.raises(ValueError, match="expected parameters of this task"):
        collect(dist, get_distribution("point-nav-2d").test_tasks(1), 2, 5, 0)
    with pytest.raises(ValueError, match=r"policy expected actions of shape \(2, 1\), got \(2, 3\)"):
        collect(dist, tasks, 2, 5, 0, policy=lambda o: np.zeros((2, 3)))


def test_switching_stream_changes_dynamics_at_the_switch() -> None:
    dist = get_distribution("pendulum-mass-length")
    a, b = dist.params(mass=0.6, length=0.6), dist.params(mass=1.9, length=1.8)
    stream = collect_switching_stream(dist, a, b, horizon=40, switch_at=15, seed=2)
    same = collect_switching_stream(dist, a, a, horizon=40, switch_at=15, seed=2)
    assert stream.inputs.shape == (1, 1, 40, 4) and stream.switch == (15, b) and stream.tasks == (a,)
    assert stream.starts[0, 0, 0] and not stream.starts[0, 0, 1:].any()
    assert torch.equal(stream.inputs[..., :15, :], same.inputs[..., :15, :])
    assert torch.equal(stream.inputs[..., 15, :], same.inputs[..., 15, :])  # state carries over
    assert not torch.equal(stream.targets[..., 15, :], same.targets[..., 15, :])
    # The step after the switch is task b's dynamics from the carried-over state.
    env = PendulumMassLengthEnv(mass=1.9, length=1.8)
    env.reset(seed=0)
    cos, sin, thdot = stream.inputs[0, 0, 15, :3].double().numpy()
    env.state = np.array([np.arctan2(sin, cos), thdot])
    nxt = env.step(stream.inputs[0, 0, 15, 3:].numpy())[0]
    np.testing.assert_allclose(nxt - stream.inputs[0, 0, 15, :3].numpy(), stream.targets[0, 0, 15].numpy(), atol=1e-5)


def test_switching_stream_bad_input() -> None:
    dist = get_distribution("point-nav-2d")
    a, b = dist.test_tasks(2)
    with pytest.raises(ValueError, match=r"switch_at expected in \[1, 9\], got 10"):
        collect_switching_stream(dist, a, b, horizon=10, switch_at=10, seed=0)
    with pytest.raises(ValueError, match="horizon expected an int >= 2, got 1"):
        collect_switching_stream(dist, a, b, horizon=1, switch_at=1, seed=0)


def test_actions_beyond_the_bounds_are_recorded_as_the_env_applies_them() -> None:
    dist = get_distribution("pendulum-mass-length")
    tasks = dist.sample(2, np.random.default_rng(0))
    wild = collect(dist, tasks, episodes=1, horizon=5, seed=0, policy=lambda obs: np.full((len(obs), 1), 7.5))
    tame = collect(dist, tasks, episodes=1, horizon=5, seed=0, policy=lambda obs: np.full((len(obs), 1), 2.0))
    assert float(dist.make_raw_env(tasks[0]).action_space.high[0]) == 2.0  # Pendulum-v1's torque bound
    assert np.array_equal(np.asarray(wild.inputs), np.asarray(tame.inputs))
    assert np.array_equal(np.asarray(wild.targets), np.asarray(tame.targets))
