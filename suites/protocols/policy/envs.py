"""Many episodes of several tasks stepped as one batch, one episode per row.

Policy-gradient sampling needs every row to be one episode from its start: a row that ends
(terminates) stays ended and earns 0 until the next ``reset``, as the MAML-RL sampler stops a
path. A distribution's own vectorised env (``PointNavVec``) already behaves so and is used when it
exists; otherwise ``GymBatch`` steps bare gymnasium envs (the MuJoCo tasks) in a plain loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import Env, spaces

from suites.tasks import TaskDistribution, TaskParams
from suites.tasks.base import VectorTaskEnv


class GymBatch:
    """Bare envs of a distribution, one task per row, stepped together.

    Args:
        dist: the task distribution.
        tasks: one task per row.
        seed: seeds the rows' resets (each ``reset`` draws fresh seeds from this stream).

    Shapes:
        reset() -> obs (n, obs_dim); step(actions (n, act_dim)) -> obs (n, obs_dim), reward (n,),
        done (n,) (True from the step a row terminated onwards).
    """

    def __init__(self, dist: TaskDistribution, tasks: Sequence[TaskParams], seed: int) -> None:
        if not tasks:
            raise ValueError("GymBatch: tasks expected at least one task, got []")
        self.envs: list[Env] = [dist.make_raw_env(t) for t in tasks]
        self.num_envs = len(self.envs)
        self.action_space = self.envs[0].action_space
        self._rng = np.random.default_rng(seed)
        self._obs = np.zeros(1)
        self._done = np.zeros(self.num_envs, dtype=bool)

    def reset(self) -> np.ndarray:
        """Every row to a fresh (seeded) start, none done."""
        seeds = self._rng.integers(2**31 - 1, size=self.num_envs)
        self._obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds, strict=True)])
        self._done[:] = False
        return self._obs.astype(np.float32)

    def reset_rows(self, mask: np.ndarray) -> np.ndarray:
        """Rows where ``mask`` is True to a fresh start; returns all observations."""
        for j in np.flatnonzero(mask):
            self._obs[j] = self.envs[j].reset(seed=int(self._rng.integers(2**31 - 1)))[0]
            self._done[j] = False
        return self._obs.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step the rows still running; ended rows keep their observation and earn 0."""
        discrete = isinstance(self.action_space, spaces.Discrete)
        reward = np.zeros(self.num_envs)
        for j in np.flatnonzero(~self._done):
            a = int(actions[j]) if discrete else actions[j]
            obs, r, terminated, _, _ = self.envs[j].step(a)
            self._obs[j], reward[j] = obs, r
            self._done[j] = terminated
        return self._obs.astype(np.float32), reward, self._done.copy()


def make_batch_env(dist: TaskDistribution, tasks: Sequence[TaskParams], per_task: int, seed: int) -> VectorTaskEnv:
    """``per_task`` rows of each task, task-major (row = task * per_task + j).

    Args:
        dist: the task distribution.
        tasks: K tasks.
        per_task: N episodes per task.
        seed: seeds resets of envs with random starts (the MuJoCo tasks).

    Returns:
        A batch env with K * N rows: the distribution's vectorised env when it has one, else a
        ``GymBatch``.
    """
    if per_task < 1:
        raise ValueError(f"make_batch_env: per_task expected an int >= 1, got {per_task!r}")
    rows = [t for t in tasks for _ in range(per_task)]
    if dist.vector_env is not None:
        return dist.vector_env(rows)
    return GymBatch(dist, rows, seed)
