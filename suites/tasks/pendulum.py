"""``pendulum-mass-length``: Pendulum-v1 with the pole's mass and length as the task.

Pendulum-v1 integrates thdot' = thdot + (3 g / (2 l) sin th + 3 / (m l^2) u) dt, so the length
changes the gravity term and both change the response to torque: a dynamics-shift family.
"""

from __future__ import annotations

from collections.abc import Mapping

from gymnasium.envs.classic_control.pendulum import PendulumEnv

from suites.tasks.base import Array, TaskDistribution, atan2
from suites.tasks.grid_spaces import BoxSpace
from suites.tasks.spaces import TaskParams

NAME = "pendulum-mass-length"
SPACE = BoxSpace(names=("mass", "length"), low=(0.5, 0.5), high=(2.0, 2.0), cells=5,
                 ood_low=(0.25, 0.25), ood_high=(2.75, 2.75))  # fmt: skip
"""Task range [0.5, 2.0]^2 split on 5 x 5 cells, splits >= 0.075 apart (0.05 of the range); the
out-of-distribution test region: [0.25, 2.75]^2 minus [0.425, 2.075]^2 (>= 0.075 outside the range)."""
MAX_TORQUE = 2.0


class PendulumMassLengthEnv(PendulumEnv):
    """Pendulum-v1 whose mass ``m`` and length ``l`` are set per task (and by ``set_task``)."""

    def __init__(self, mass: float = 1.0, length: float = 1.0, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        self.set_task({"mass": mass, "length": length})

    def set_task(self, params: Mapping[str, float]) -> None:
        """Switch to the task ``params`` (mass, length), also mid-episode."""
        task = SPACE.validate(NAME, dict(params))
        self.task = task
        self.m, self.l = task["mass"], task["length"]


def reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """Pendulum-v1's reward -(th^2 + 0.1 thdot^2 + 0.001 u^2) from obs = (cos th, sin th, thdot).

    The cost is on the state before the step and the clipped torque; it does not depend on the
    task (only the dynamics do).
    """
    th = atan2(obs[..., 1], obs[..., 0])  # already in [-pi, pi]
    u = action[..., 0].clip(-MAX_TORQUE, MAX_TORQUE)
    return -(th * th + 0.1 * obs[..., 2] ** 2 + 0.001 * u * u)


DISTRIBUTION = TaskDistribution(
    name=NAME,
    family="dynamics",
    env_id="SSMMetaRL/PendulumMassLength-v0",
    env_class=PendulumMassLengthEnv,
    space=SPACE,
    horizon=200,
    reward_fn=reward,
    source="gymnasium Pendulum-v1 (m, l attributes); ranges ours",
    test_seed=1001,
)
