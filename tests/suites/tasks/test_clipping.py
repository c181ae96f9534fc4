"""Actions beyond the action bounds act, and cost, exactly as the clipped actions: in the env's step
and in the batched reward a planner scores with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suites.tasks import TASKS, PointNavVec, get_distribution


def _outside(low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An action with every coordinate beyond its bound, alternately above and below, by 0.5 to 3 widths."""
    scale = rng.uniform(0.5, 3.0, size=low.shape) * (high - low)
    signs = np.where(np.arange(low.size) % 2 == 0, 1.0, -1.0)
    return np.where(signs > 0, high + scale, low - scale).astype(np.float32)


@pytest.mark.parametrize("name", TASKS)
def test_out_of_bounds_action_steps_and_costs_as_the_clipped_one(name: str) -> None:
    dist = get_distribution(name)
    task = dist.test_tasks(1)[0]
    raw, clipped = dist.make_raw_env(task), dist.make_raw_env(task)
    low, high = raw.action_space.low, raw.action_space.high
    rng = np.random.default_rng(0)
    for env in (raw, clipped):
        env.reset(seed=3)
    warmup = rng.uniform(low, high, size=(5, *low.shape)).astype(np.float32)
    for a in warmup:  # off the start state, both envs alike
        for env in (raw, clipped):
            obs = env.step(a)[0]
    for _ in range(3):
        action = _outside(low, high, rng)
        inside = np.clip(action, low, high)
        assert not np.array_equal(action, inside)
        next_raw, reward_raw, term_raw, _, _ = raw.step(action)
        next_clip, reward_clip, term_clip, _, _ = clipped.step(inside)
        np.testing.assert_array_equal(next_raw, next_clip)
        assert reward_raw == reward_clip and term_raw == term_clip
        # the batched reward charges the same as the env, for the raw action as for the clipped one
        tol = 1e-6 if next_raw.dtype == np.float32 else 1e-9  # the pendulum and the point observe in float32
        f64 = [np.asarray(x, dtype=np.float64)[None] for x in (obs, action, inside, next_raw)]
        for a in (f64[1], f64[2]):
            np.testing.assert_allclose(dist.reward(f64[0], a, f64[3], task), [reward_raw], rtol=tol, atol=tol)
        same = dist.reward(f64[0], f64[1], f64[3], task), dist.reward(f64[0], f64[2], f64[3], task)
        np.testing.assert_array_equal(*same)
        t = [torch.as_tensor(np.asarray(x, dtype=np.float32))[None] for x in (obs, action, next_raw)]
        t_in = torch.as_tensor(inside)[None]
        assert torch.equal(dist.reward(t[0], t[1], t[2], task), dist.reward(t[0], t_in, t[2], task))
        obs = next_raw
        if term_raw:
            break


def test_point_nav_vec_clips_as_the_env() -> None:
    dist = get_distribution("point-nav-2d")
    tasks = dist.test_tasks(2)
    a, b = PointNavVec.from_tasks(tasks), PointNavVec.from_tasks(tasks)
    a.reset()
    b.reset()
    action = np.array([[0.7, -3.0], [-0.25, 0.05]])
    obs_a, r_a, _ = a.step(action)
    obs_b, r_b, _ = b.step(np.clip(action, -0.1, 0.1))
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(r_a, r_b)


def test_the_clip_bounds_are_the_action_spaces() -> None:
    from suites.tasks import ant, halfcheetah

    for name in TASKS:
        module = ant if name.startswith("ant") else halfcheetah if name.startswith("halfcheetah") else None
        if module is None:
            continue
        dist = get_distribution(name)
        space = dist.make_raw_env(dist.test_tasks(1)[0]).action_space
        assert (space.low == module.ACTION_LOW).all() and (space.high == module.ACTION_HIGH).all(), name
