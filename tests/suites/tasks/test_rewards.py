"""Batched rewards equal the envs' rewards, and peak where the task says."""

import numpy as np
import pytest
import torch

from suites.tasks import TASKS, PointNavVec, get_distribution
from suites.tasks.point_nav import PointNavEnv


def _record(name: str, steps: int, seed: int) -> tuple[np.ndarray, ...]:
    """(obs, action, next_obs, reward) of random steps in one env of ``name``, with its task."""
    dist = get_distribution(name)
    task = dist.sample(1, np.random.default_rng(seed))[0]
    env = dist.make_env(task)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(steps):
        low, high = env.action_space.low, env.action_space.high
        action = rng.uniform(1.2 * low, 1.2 * high).astype(np.float32)  # some out of bounds
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, reward))
        obs = env.reset()[0] if terminated or truncated else next_obs
    o, a, n, r = (np.array(x, dtype=np.float64) for x in zip(*rows, strict=True))
    return o, a, n, r, task


@pytest.mark.parametrize("name", TASKS)
def test_batched_reward_equals_env_reward(name: str) -> None:
    dist = get_distribution(name)
    obs, action, next_obs, reward, task = _record(name, 60, seed=2)
    # Exact up to rounding: MuJoCo envs observe in float64, pendulum and point in float32.
    single = dist.env_class().observation_space.dtype == np.float32
    tol = 1e-6 if single else 1e-9
    np.testing.assert_allclose(dist.reward(obs, action, next_obs, task), reward, rtol=tol, atol=tol)
    # Any leading batch shape, and torch tensors in float32 (as a planner would pass them).
    batched = dist.reward(obs.reshape(3, 20, -1), action.reshape(3, 20, -1), next_obs.reshape(3, 20, -1), task)
    assert batched.shape == (3, 20)
    t = [torch.from_numpy(x).float() for x in (obs, action, next_obs)]
    got = dist.reward(*t, task)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), reward, rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("target", [0.0, 0.7, 1.9])
def test_velocity_reward_peaks_at_the_target(target: float) -> None:
    dist = get_distribution("halfcheetah-vel")
    task = dist.params(target_velocity=target)
    v = np.linspace(-1.0, 3.0, 401)
    obs = np.zeros((len(v), 18))
    next_obs = obs.copy()
    next_obs[:, 0] = v * 0.05  # x advances v * dt
    r = dist.reward(obs, np.zeros((len(v), 6)), next_obs, task)
    assert v[np.argmax(r)] == pytest.approx(target, abs=0.01)
    assert r.max() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["halfcheetah-dir", "ant-dir"])
def test_direction_reward_follows_the_direction(name: str) -> None:
    dist = get_distribution(name)
    obs, action, next_obs, _, _ = _record(name, 40, seed=0)
    fwd = dist.reward(obs, action, next_obs, dist.params(direction=1))
    bwd = dist.reward(obs, action, next_obs, dist.params(direction=-1))
    v = (next_obs[:, 0] - obs[:, 0]) / 0.05
    np.testing.assert_allclose(fwd - bwd, 2 * v, atol=1e-9)


@pytest.mark.parametrize(("name", "obs_dim"), [("ant-goal", 107), ("point-nav-2d", 2)])
def test_goal_reward_is_highest_at_the_goal(name: str, obs_dim: int) -> None:
    dist = get_distribution(name)
    for task in dist.test_tasks(3):
        g = np.array([task["goal_x"], task["goal_y"]])
        grid = np.stack(np.meshgrid(np.linspace(-3, 3, 61), np.linspace(-3, 3, 61)), -1).reshape(-1, 2)
        grid = np.concatenate([grid, g[None]])
        next_obs = np.zeros((len(grid), obs_dim))
        next_obs[:, :2] = grid
        act_dim = 8 if name == "ant-goal" else 2
        r = dist.reward(np.zeros_like(next_obs), np.zeros((len(grid), act_dim)), next_obs, task)
        np.testing.assert_array_equal(grid[np.argmax(r)], g)
        assert r.max() == 0.0


def test_point_nav_follows_the_maml_definition() -> None:
    env = PointNavEnv(goal_x=0.3, goal_y=-0.2)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, _, _ = env.step(np.array([0.5, -0.05], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.05], rtol=1e-6)  # clipped to 0.1 per step
    assert reward == pytest.approx(-np.hypot(0.2, 0.15))
    assert not terminated
    obs, _, _, _, _ = env.step(np.array([0.1, -0.1], dtype=np.float32))
    obs, reward, terminated, _, _ = env.step(np.array([0.095, -0.05], dtype=np.float32))
    assert terminated and reward > -0.01  # within 0.01 of the goal in both coordinates


def test_point_nav_vec_matches_the_env_row_by_row() -> None:
    goals = np.array([[0.3, -0.2], [-0.45, 0.1], [0.05, 0.05]])
    vec = PointNavVec(goals)
    envs = [PointNavEnv(goal_x=g[0], goal_y=g[1]) for g in goals]
    obs = vec.reset()
    for env in envs:
        env.reset(seed=0)
    rng = np.random.default_rng(0)
    done_env = np.zeros(3, dtype=bool)
    for _ in range(40):
        act = np.clip((goals - obs) + 0.01 * rng.standard_normal((3, 2)), -0.12, 0.12).astype(np.float32)
        obs, reward, done = vec.step(act)
        for j, env in enumerate(envs):
            if done_env[j]:
                assert reward[j] == 0.0  # the path has ended: no movement, no reward
                continue
            o, r, term, _, _ = env.step(act[j])
            np.testing.assert_array_equal(obs[j], o)
            assert reward[j] == r
            done_env[j] = term
        np.testing.assert_array_equal(done, done_env)
    assert done.all()
    obs = vec.reset_rows(np.array([True, False, False]))
    np.testing.assert_array_equal(obs[0], [0.0, 0.0])
    assert not vec.step(np.zeros((3, 2)))[2][0]


def test_point_nav_vec_rejects_bad_shapes_and_goals() -> None:
    with pytest.raises(ValueError, match=r"goals expected shape \(n, 2\)"):
        PointNavVec(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"parameter goal_x expected in \[-0.5, 0.5\], got 0.9"):
        PointNavVec(np.array([[0.9, 0.0]]))
    with pytest.raises(ValueError, match=r"actions expected shape \(2, 2\), got \(2,\)"):
        PointNavVec(np.zeros((2, 2))).step(np.zeros(2))
