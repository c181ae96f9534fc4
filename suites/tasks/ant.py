"""Ant-v5 task families: crippled leg (dynamics), direction and goal (reward).

Every variant observes the torso's x, y position too (``exclude_current_positions_from_
observation=False``): obs = qpos (15) + qvel (14) + clipped contact forces of bodies 1..13
(78) = 107. Velocity, goal distance and the contact cost are then functions of (obs, action,
next_obs), and the batched rewards are exact. Actions are clipped to the action bounds [-1, 1]
before the simulation and the control cost see them, in ``step`` and in the batched rewards alike
(as the MAML code's normalised envs did), so a planner and the env charge the same cost.

Splits (suites/tasks/README.md): crippled leg: train legs 0 and 1, validation leg 2, test leg 3;
goal: interleaved grid cells, tasks of different splits >= 0.3 apart; the direction tasks share
their two values (+1, -1) between train, validation and test: only seeds are held out there.

References:
    Finn et al. 2017 (cbfinn/maml_rl: rllab/envs/mujoco/ant_env_rand_direc.py): direction
    reward dir * v - 0.005 ||a||^2 - 0.0005 ||clip(f_contact)||^2 + 0.05, episode over when
    the torso height leaves [0.2, 1.0].
    Rothfuss et al. 2019, ProMP (meta_policy_search/envs/mujoco_envs/ant_rand_goal.py): goal
    uniform in a disc of radius 3, reward -||xy - g||_1 - 0.1 ||a||^2 - 0.0005 ||clip(f)||^2,
    no termination. (maml_rl's ant_env_rand_goal adds +4 and draws g in a square.)
    Nagabandi, Clavera et al. 2019: the ant with a crippled leg.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.utils import EzPickle

from suites.tasks.base import Array, TaskDistribution, clip, square_sum
from suites.tasks.grid_spaces import DiscSpace
from suites.tasks.mujoco_models import CachedModelMixin
from suites.tasks.spaces import ChoiceSpace, ParamSpace, TaskParams

DT = 0.05
"""Seconds per env step: timestep 0.01 x frame_skip 5."""

ACTION_LOW, ACTION_HIGH = -1.0, 1.0
"""Every actuator's control range (ant.xml ``ctrlrange``): the action space's bounds."""


def _ctrl_cost_sq(action: Array) -> Array:
    """||clip(a)||^2 over the last axis: the squared norm of the action the env applies."""
    return square_sum(clip(action, ACTION_LOW, ACTION_HIGH))


def _square_norm(action: np.ndarray) -> float:
    a = np.asarray(action, dtype=np.float64)
    return float(np.dot(a, a))


CONTACT_DIMS = 78
"""The last 78 observation entries: clipped external contact forces of bodies 1..13."""

CONTACT_COST = 0.5 * 1e-3
SURVIVE_REWARD = 0.05
DIR_CTRL_COST = 0.5 * 1e-2
GOAL_CTRL_COST = 0.1

LEGS = ("front_left_leg", "front_right_leg", "back_leg", "right_back_leg")
"""ant.xml's body names of the legs; leg k is actuated through joints hip_{k+1}, ankle_{k+1}."""


class AntTaskEnv(CachedModelMixin, AntEnv):
    """Ant-v5 with x, y observed, a task and ``set_task``.

    Subclasses set ``task_name``, ``space`` and ``terminates`` and implement ``_task_reward``
    (and ``_apply_task`` when the task changes the model).
    """

    task_name: ClassVar[str] = ""
    space: ClassVar[ParamSpace]
    terminates: ClassVar[bool] = True

    def __init__(self, render_mode: str | None = None, **params: Any) -> None:
        super().__init__(
            exclude_current_positions_from_observation=False,
            terminate_when_unhealthy=self.terminates,
            render_mode=render_mode,
        )
        EzPickle.__init__(self, render_mode=render_mode, **params)
        self._base_gear = self.model.actuator_gear.copy()
        self.set_task(params)

    def set_task(self, params: Mapping[str, float]) -> None:
        """Switch to the task ``params``, also mid-episode (the model is restored first)."""
        self.task = self.space.validate(self.task_name, dict(params))
        self.model.actuator_gear[:] = self._base_gear
        self._apply_task(self.task)

    def _apply_task(self, task: TaskParams) -> None:
        """Change the compiled model for ``task``; the default changes nothing."""

    def _task_reward(self, xy: np.ndarray, velocity: np.ndarray, action_sq: float, contact: float) -> float:
        raise NotImplementedError

    def step(  # type: ignore[override]  # gymnasium annotates reward and info as float64
        self, action: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One step of the action clipped to its bounds; the task's reward from the torso's
        displacement, the clipped action and the contacts."""
        action = np.clip(action, ACTION_LOW, ACTION_HIGH)
        xy_before = self.data.qpos[:2].copy()
        self.do_simulation(action, self.frame_skip)
        xy = self.data.qpos[:2].copy()
        velocity = (xy - xy_before) / DT
        contact = float(np.sum(np.square(np.clip(self.data.cfrc_ext[1:], -1.0, 1.0))))
        reward = self._task_reward(xy, velocity, _square_norm(action), contact)
        terminated = self.terminates and not self.is_healthy
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, terminated, False, {"x_velocity": velocity[0]}


def _x_velocity(obs: Array, next_obs: Array) -> Array:
    return (next_obs[..., 0] - obs[..., 0]) / DT


def _contact(next_obs: Array) -> Array:
    return square_sum(next_obs[..., -CONTACT_DIMS:])


# ---- dynamics shift -------------------------------------------------------------------------

CRIPPLED = ChoiceSpace(name="crippled_leg", train=(0, 1), validation=(2,), test=(3,), labels=tuple(enumerate(LEGS)))
"""Legs by hip position: 0 (+x, +y), 1 (-x, +y), 2 (-x, -y), 3 (+x, -y); the ant walks along +x. Train
with a +y leg disabled; validation leg 2 and test leg 3 are the mirror images of training legs 1 and 0
across the walking axis."""


def forward_reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """v_x - 0.005 ||clip(a)||^2 - 0.0005 ||clip(f)||^2 + 0.05: ant-dir's reward with direction +1."""
    return (
        _x_velocity(obs, next_obs)
        - DIR_CTRL_COST * _ctrl_cost_sq(action)
        - CONTACT_COST * _contact(next_obs)
        + SURVIVE_REWARD
    )


class AntCrippledLegEnv(AntTaskEnv):
    """Leg ``crippled_leg`` disabled: its hip and ankle actuators have zero gear."""

    task_name = "ant-crippled-leg"
    space = CRIPPLED

    def __init__(self, crippled_leg: int = 0, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, crippled_leg=crippled_leg)

    def _apply_task(self, task: TaskParams) -> None:
        leg = int(task["crippled_leg"]) + 1
        for joint in (f"hip_{leg}", f"ankle_{leg}"):
            jid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, joint)
            self.model.actuator_gear[self.model.actuator_trnid[:, 0] == jid, :] = 0.0

    def _task_reward(self, xy: np.ndarray, velocity: np.ndarray, action_sq: float, contact: float) -> float:
        return float(velocity[0]) - DIR_CTRL_COST * action_sq - CONTACT_COST * contact + SURVIVE_REWARD


# ---- reward-defined -------------------------------------------------------------------------

DIRECTION = ChoiceSpace(name="direction", train=(1, -1), labels=((1, "+x"), (-1, "-x")))
"""Only two values: train, validation and test share both; only seeds are held out."""
GOAL = DiscSpace(names=("goal_x", "goal_y"), radius=3.0, cells=5)
"""The disc of radius 3 split on 5 x 5 cells over [-3, 3]^2, splits >= 0.3 apart (0.05 of 6)."""


def dir_reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """dir * v_x - 0.005 ||clip(a)||^2 - 0.0005 ||clip(f)||^2 + 0.05 (maml_rl ant_env_rand_direc)."""
    return (
        task["direction"] * _x_velocity(obs, next_obs)
        - DIR_CTRL_COST * _ctrl_cost_sq(action)
        - CONTACT_COST * _contact(next_obs)
        + SURVIVE_REWARD
    )


def goal_reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """-|x - gx| - |y - gy| - 0.1 ||clip(a)||^2 - 0.0005 ||clip(f)||^2 (ProMP ant_rand_goal)."""
    dist = abs(next_obs[..., 0] - task["goal_x"]) + abs(next_obs[..., 1] - task["goal_y"])
    return -dist - GOAL_CTRL_COST * _ctrl_cost_sq(action) - CONTACT_COST * _contact(next_obs)


class AntDirEnv(AntTaskEnv):
    """Rewarded for walking along +x (``direction`` = 1) or -x (-1)."""

    task_name = "ant-dir"
    space = DIRECTION

    def __init__(self, direction: int = 1, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, direction=direction)

    def _task_reward(self, xy: np.ndarray, velocity: np.ndarray, action_sq: float, contact: float) -> float:
        forward = self.task["direction"] * float(velocity[0])
        return forward - DIR_CTRL_COST * action_sq - CONTACT_COST * contact + SURVIVE_REWARD


class AntGoalEnv(AntTaskEnv):
    """Rewarded for closeness (L1) of the torso to the goal (``goal_x``, ``goal_y``)."""

    task_name = "ant-goal"
    space = GOAL
    terminates = False

    def __init__(self, goal_x: float = 1.0, goal_y: float = 1.0, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, goal_x=goal_x, goal_y=goal_y)

    def _task_reward(self, xy: np.ndarray, velocity: np.ndarray, action_sq: float, contact: float) -> float:
        dist = abs(float(xy[0]) - self.task["goal_x"]) + abs(float(xy[1]) - self.task["goal_y"])
        return -dist - GOAL_CTRL_COST * action_sq - CONTACT_COST * contact


MAML_SOURCE = "Finn et al. 2017; cbfinn/maml_rl rllab/envs/mujoco/ant_env_rand_direc.py"
DISTRIBUTIONS = (
    TaskDistribution(
        name="ant-crippled-leg",
        family="dynamics",
        env_id="SSMMetaRL/AntCrippledLeg-v0",
        env_class=AntCrippledLegEnv,
        space=CRIPPLED,
        horizon=200,
        reward_fn=forward_reward,
        source="Nagabandi, Clavera et al. 2019 (crippled leg); split and reward ours",
    ),
    TaskDistribution(
        name="ant-dir",
        family="reward",
        env_id="SSMMetaRL/AntDir-v0",
        env_class=AntDirEnv,
        space=DIRECTION,
        horizon=200,
        reward_fn=dir_reward,
        source=MAML_SOURCE,
    ),
    TaskDistribution(
        name="ant-goal",
        family="reward",
        env_id="SSMMetaRL/AntGoal-v0",
        env_class=AntGoalEnv,
        space=GOAL,
        horizon=200,
        reward_fn=goal_reward,
        source="Rothfuss et al. 2019 ProMP ant_rand_goal.py; Finn et al. 2017",
        test_seed=1005,
    ),
)
