"""``point-nav-2d``: the 2-D point navigation task of MAML-RL, one env and a vectorised one.

The point starts at the origin, observes its position (not the goal), moves by its action
clipped to [-0.1, 0.1]^2, is rewarded -||p - g||_2 after the move, and the episode ends when it
is within 0.01 of the goal in both coordinates.

References:
    Finn et al. 2017 (cbfinn/maml_rl: maml_examples/point_env_randgoal.py): goal
    U[-0.5, 0.5]^2, horizon 100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from suites.tasks.base import Array, TaskDistribution
from suites.tasks.grid_spaces import BoxSpace
from suites.tasks.spaces import TaskParams

NAME = "point-nav-2d"
SPACE = BoxSpace(names=("goal_x", "goal_y"), low=(-0.5, -0.5), high=(0.5, 0.5), cells=5)
"""Goals in [-0.5, 0.5]^2 split on 5 x 5 cells, splits >= 0.05 apart (0.05 of the range)."""
MAX_STEP = 0.1
GOAL_TOLERANCE = 0.01


class PointNavEnv(gym.Env[np.ndarray, np.ndarray]):
    """A point in the plane moving towards a hidden goal (``goal_x``, ``goal_y``)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(self, goal_x: float = 0.25, goal_y: float = 0.25) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self._x = self._y = 0.0
        self.set_task({"goal_x": goal_x, "goal_y": goal_y})

    def set_task(self, params: Mapping[str, float]) -> None:
        """Move the goal to ``params`` (goal_x, goal_y), also mid-episode."""
        self.task = SPACE.validate(NAME, dict(params))
        self._gx, self._gy = self.task["goal_x"], self.task["goal_y"]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Back to the origin (the start is deterministic; ``seed`` seeds ``np_random``)."""
        super().reset(seed=seed)
        self._x = self._y = 0.0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by the clipped action; reward -distance to the goal; done within 0.01."""
        # Plain float arithmetic: this env is stepped millions of times, numpy calls cost more.
        ax, ay = float(action[0]), float(action[1])
        self._x += min(max(ax, -MAX_STEP), MAX_STEP)
        self._y += min(max(ay, -MAX_STEP), MAX_STEP)
        dx, dy = self._x - self._gx, self._y - self._gy
        reward = -math.sqrt(dx * dx + dy * dy)
        terminated = abs(dx) < GOAL_TOLERANCE and abs(dy) < GOAL_TOLERANCE
        return np.array([self._x, self._y], dtype=np.float32), reward, terminated, False, {}


class PointNavVec:
    """Many point-navigation trajectories stepped together in numpy, one goal per row.

    Built for policy-gradient rollouts: a row whose episode has ended (within the tolerance of
    its goal) stays where it is and earns 0 from then on, as a sampler that stops the path would,
    until ``reset_rows`` starts it again (data collection does so at once). Each row follows
    ``PointNavEnv`` exactly, to the last bit.

    Shapes:
        goals (n, 2); reset -> obs (n, 2); step(actions (n, 2)) -> obs (n, 2), reward (n,),
        done (n,) (True from the step the row reached its goal onwards).
    """

    action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
    """The action space of one row."""

    def __init__(self, goals: np.ndarray) -> None:
        goals = np.asarray(goals, dtype=np.float64)
        if goals.ndim != 2 or goals.shape[1] != 2 or goals.shape[0] < 1:
            raise ValueError(f"PointNavVec: goals expected shape (n, 2) with n >= 1, got {goals.shape}")
        for g in goals:
            SPACE.validate(NAME, {"goal_x": g[0], "goal_y": g[1]})
        self.goals = goals
        self.num_envs = goals.shape[0]
        self._pos = np.zeros_like(goals)
        self._done = np.zeros(self.num_envs, dtype=bool)

    @classmethod
    def from_tasks(cls, tasks: list[TaskParams]) -> PointNavVec:
        """One row per task of ``point-nav-2d``."""
        return cls(np.array([[t["goal_x"], t["goal_y"]] for t in tasks]))

    def reset(self) -> np.ndarray:
        """Every row back to the origin, none done."""
        self._pos = np.zeros_like(self.goals)
        self._done[:] = False
        return self._pos.astype(np.float32)

    def reset_rows(self, mask: np.ndarray) -> np.ndarray:
        """Rows where ``mask`` (n,) is True back to the origin and running; returns all obs."""
        self._pos[mask] = 0.0
        self._done[mask] = False
        return self._pos.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move the rows still running; returns (obs, reward, done)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != self.goals.shape:
            raise ValueError(f"PointNavVec.step: actions expected shape {self.goals.shape}, got {actions.shape}")
        running = ~self._done
        if running.all():  # the common case, without fancy indexing
            self._pos += np.clip(actions, -MAX_STEP, MAX_STEP)
        else:
            self._pos[running] += np.clip(actions[running], -MAX_STEP, MAX_STEP)
        delta = self._pos - self.goals
        reward = -np.sqrt(np.sum(delta * delta, axis=1))
        reward[~running] = 0.0
        self._done |= running & np.all(np.abs(delta) < GOAL_TOLERANCE, axis=1)
        return self._pos.astype(np.float32), reward, self._done.copy()


def reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """-||p' - g||_2 with p' the position after the step (= next_obs).

    No control cost: the action enters only through the move, which the env clips to
    [-0.1, 0.1]^2 (``step`` and ``PointNavVec`` alike), so an action beyond the bounds moves the
    point, and is rewarded, exactly as the clipped one.
    """
    dx = next_obs[..., 0] - task["goal_x"]
    dy = next_obs[..., 1] - task["goal_y"]
    return -((dx * dx + dy * dy) ** 0.5)


DISTRIBUTION = TaskDistribution(
    name=NAME,
    family="reward",
    env_id="SSMMetaRL/PointNav2D-v0",
    env_class=PointNavEnv,
    space=SPACE,
    horizon=100,
    reward_fn=reward,
    source="Finn et al. 2017; cbfinn/maml_rl maml_examples/point_env_randgoal.py",
    test_seed=1004,
    vector_env=PointNavVec.from_tasks,
)
