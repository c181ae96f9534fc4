"""HalfCheetah-v5 task families: mass-damping and crippled joint (dynamics), velocity and
direction (reward).

Every variant observes the root x position too (``exclude_current_positions_from_observation=
False``; obs = qpos (9) + qvel (9) = 18), so the forward velocity the rewards use,
v = (x' - x) / dt, is a function of (obs, next_obs) and the batched rewards are exact.
Dynamics parameters are written into the compiled MuJoCo model from copies of its original
arrays, so each ``set_task`` starts from the unmodified model. Actions are clipped to the action
bounds [-1, 1] before the simulation and the control cost see them, in ``step`` and in the batched
rewards alike (as the MAML code's normalised envs did), so a planner and the env charge the same cost.

Splits (suites/tasks/README.md): mass-damping and velocity on interleaved grid cells, tasks of
different splits >= 0.05 of the range apart (mass-damping also has an out-of-distribution test
region); crippled joint: train thighs and feet, validation the back shin, test the front shin; the
direction tasks share their two values (+1, -1) between train, validation and test: only seeds are
held out there.

References:
    Finn et al. 2017, "Model-Agnostic Meta-Learning" (cbfinn/maml_rl: half_cheetah_env_rand.py,
    half_cheetah_env_rand_direc.py): velocity and direction rewards, control cost 0.05 ||a||^2.
    Nagabandi, Clavera et al. 2019, "Learning to Adapt in Dynamic, Real-World Environments
    through Meta-RL": the cheetah with a disabled joint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import EzPickle

from suites.tasks.base import Array, TaskDistribution, clip, square_sum
from suites.tasks.grid_spaces import BoxSpace
from suites.tasks.mujoco_models import CachedModelMixin
from suites.tasks.spaces import ChoiceSpace, ParamSpace, TaskParams

DT = 0.05
"""Seconds per env step: timestep 0.01 x frame_skip 5."""

ACTION_LOW, ACTION_HIGH = -1.0, 1.0
"""Every actuator's control range (half_cheetah.xml ``ctrlrange``): the action space's bounds."""


def _ctrl_cost_sq(action: Array) -> Array:
    """||clip(a)||^2 over the last axis: the squared norm of the action the env applies."""
    return square_sum(clip(action, ACTION_LOW, ACTION_HIGH))


def _square_norm(action: np.ndarray) -> float:
    a = np.asarray(action, dtype=np.float64)
    return float(np.dot(a, a))


JOINTS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
"""HalfCheetah's six actuated joints, in actuator order."""


class HalfCheetahTaskEnv(CachedModelMixin, HalfCheetahEnv):
    """HalfCheetah-v5 with the x position observed, a task and ``set_task``.

    Subclasses set ``task_name`` and ``space`` and implement ``_apply_task`` (change the model)
    and ``_task_reward`` (from the forward velocity and the squared action norm).
    """

    task_name: ClassVar[str] = ""
    space: ClassVar[ParamSpace]

    def __init__(self, render_mode: str | None = None, **params: Any) -> None:
        super().__init__(exclude_current_positions_from_observation=False, render_mode=render_mode)
        EzPickle.__init__(self, render_mode=render_mode, **params)
        self._base_mass = self.model.body_mass.copy()
        self._base_inertia = self.model.body_inertia.copy()
        self._base_damping = self.model.dof_damping.copy()
        self._base_gear = self.model.actuator_gear.copy()
        self.set_task(params)

    def set_task(self, params: Mapping[str, float]) -> None:
        """Switch to the task ``params``, also mid-episode (the model is restored first)."""
        self.task = self.space.validate(self.task_name, dict(params))
        self.model.body_mass[:] = self._base_mass
        self.model.body_inertia[:] = self._base_inertia
        self.model.dof_damping[:] = self._base_damping
        self.model.actuator_gear[:] = self._base_gear
        self._apply_task(self.task)

    def _apply_task(self, task: TaskParams) -> None:
        """Change the compiled model for ``task``; the default changes nothing."""

    def _task_reward(self, velocity: float, action_sq: float) -> float:
        raise NotImplementedError

    def step(  # type: ignore[override]  # gymnasium annotates reward and info as float64
        self, action: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One step of the action clipped to its bounds; the reward is the task's, from the root's x
        displacement and the clipped action."""
        action = np.clip(action, ACTION_LOW, ACTION_HIGH)
        x_before = float(self.data.qpos[0])
        self.do_simulation(action, self.frame_skip)
        velocity = (float(self.data.qpos[0]) - x_before) / DT
        reward = self._task_reward(velocity, _square_norm(action))
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, False, {"x_velocity": velocity}


def _velocity(obs: Array, next_obs: Array) -> Array:
    return (next_obs[..., 0] - obs[..., 0]) / DT


# ---- dynamics shift -------------------------------------------------------------------------

MASS_DAMPING = BoxSpace(names=("mass_scale", "damping_scale"), low=(0.5, 0.5), high=(1.5, 1.5), cells=5,
                        ood_low=(0.25, 0.25), ood_high=(2.0, 2.0))  # fmt: skip
"""Task range [0.5, 1.5]^2 split on 5 x 5 cells, splits >= 0.05 apart (0.05 of the range); the
out-of-distribution test region: [0.25, 2.0]^2 minus [0.45, 1.55]^2 (>= 0.05 outside the range)."""
CRIPPLED = ChoiceSpace(name="crippled_joint", train=(0, 2, 3, 5), validation=(1,), test=(4,),
                       labels=tuple(enumerate(JOINTS)))  # fmt: skip
"""Train with a thigh or a foot disabled; validation: the back shin; test: the front shin (the same
kind of joint as the validation one, on the other leg)."""


def run_reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """HalfCheetah-v5's own reward v - 0.1 ||clip(a)||^2 (the dynamics-shift tasks keep it)."""
    return _velocity(obs, next_obs) - 0.1 * _ctrl_cost_sq(action)


class HalfCheetahMassDampingEnv(HalfCheetahTaskEnv):
    """Every body's mass and inertia scaled by ``mass_scale``, every joint's damping by
    ``damping_scale``."""

    task_name = "halfcheetah-mass-damping"
    space = MASS_DAMPING

    def __init__(self, mass_scale: float = 1.0, damping_scale: float = 1.0, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, mass_scale=mass_scale, damping_scale=damping_scale)

    def _apply_task(self, task: TaskParams) -> None:
        self.model.body_mass[:] *= task["mass_scale"]
        self.model.body_inertia[:] *= task["mass_scale"]
        self.model.dof_damping[:] *= task["damping_scale"]

    def _task_reward(self, velocity: float, action_sq: float) -> float:
        return velocity - 0.1 * action_sq


class HalfCheetahCrippledJointEnv(HalfCheetahTaskEnv):
    """Actuator ``crippled_joint`` disabled: its gear is zero, so its action exerts no torque."""

    task_name = "halfcheetah-crippled-joint"
    space = CRIPPLED

    def __init__(self, crippled_joint: int = 0, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, crippled_joint=crippled_joint)

    def _apply_task(self, task: TaskParams) -> None:
        self.model.actuator_gear[int(task["crippled_joint"]), :] = 0.0

    def _task_reward(self, velocity: float, action_sq: float) -> float:
        return velocity - 0.1 * action_sq


# ---- reward-defined -------------------------------------------------------------------------

VELOCITY = BoxSpace(names=("target_velocity",), low=(0.0,), high=(2.0,), cells=9)
"""U[0, 2] split on 9 cells (train, validation, train, test, ..., train: both ends train), splits
>= 0.1 m/s apart (0.05 of the range)."""
DIRECTION = ChoiceSpace(name="direction", train=(1, -1), labels=((1, "forward"), (-1, "backward")))
"""Only two values: train, validation and test share both; only seeds are held out."""


def vel_reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """-|v - v*| - 0.05 ||clip(a)||^2 (Finn et al. 2017)."""
    return -abs(_velocity(obs, next_obs) - task["target_velocity"]) - 0.05 * _ctrl_cost_sq(action)


def dir_reward(obs: Array, action: Array, next_obs: Array, task: TaskParams) -> Array:
    """dir * v - 0.05 ||clip(a)||^2 (Finn et al. 2017)."""
    return task["direction"] * _velocity(obs, next_obs) - 0.05 * _ctrl_cost_sq(action)


class HalfCheetahVelEnv(HalfCheetahTaskEnv):
    """Rewarded for running at ``target_velocity``."""

    task_name = "halfcheetah-vel"
    space = VELOCITY

    def __init__(self, target_velocity: float = 1.0, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, target_velocity=target_velocity)

    def _task_reward(self, velocity: float, action_sq: float) -> float:
        return -abs(velocity - self.task["target_velocity"]) - 0.05 * action_sq


class HalfCheetahDirEnv(HalfCheetahTaskEnv):
    """Rewarded for running forward (``direction`` = 1) or backward (-1)."""

    task_name = "halfcheetah-dir"
    space = DIRECTION

    def __init__(self, direction: int = 1, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, direction=direction)

    def _task_reward(self, velocity: float, action_sq: float) -> float:
        return self.task["direction"] * velocity - 0.05 * action_sq


MAML_SOURCE = "Finn et al. 2017; cbfinn/maml_rl rllab/envs/mujoco/"
DISTRIBUTIONS = (
    TaskDistribution(
        name="halfcheetah-mass-damping",
        family="dynamics",
        env_id="SSMMetaRL/HalfCheetahMassDamping-v0",
        env_class=HalfCheetahMassDampingEnv,
        space=MASS_DAMPING,
        horizon=200,
        reward_fn=run_reward,
        source="rand_param_envs-style body-mass / damping scaling; ranges ours",
        test_seed=1002,
    ),
    TaskDistribution(
        name="halfcheetah-crippled-joint",
        family="dynamics",
        env_id="SSMMetaRL/HalfCheetahCrippledJoint-v0",
        env_class=HalfCheetahCrippledJointEnv,
        space=CRIPPLED,
        horizon=200,
        reward_fn=run_reward,
        source="Nagabandi, Clavera et al. 2019 (disabled joint); split ours",
    ),
    TaskDistribution(
        name="halfcheetah-vel",
        family="reward",
        env_id="SSMMetaRL/HalfCheetahVel-v0",
        env_class=HalfCheetahVelEnv,
        space=VELOCITY,
        horizon=200,
        reward_fn=vel_reward,
        source=MAML_SOURCE + "half_cheetah_env_rand.py",
        test_seed=1003,
    ),
    TaskDistribution(
        name="halfcheetah-dir",
        family="reward",
        env_id="SSMMetaRL/HalfCheetahDir-v0",
        env_class=HalfCheetahDirEnv,
        space=DIRECTION,
        horizon=200,
        reward_fn=dir_reward,
        source=MAML_SOURCE + "half_cheetah_env_rand_direc.py",
    ),
)
