"""The control loop: one episode of a controller in a real environment, with what it measured.

A step at which the controller has no plan to act on (every candidate scored a non-finite return)
or returns a non-finite action ends the episode with ``PlanningError`` naming the step and the
cause; the loop never acts on an arbitrary plan.
"""

from __future__ import annotations

import dataclasses
import time

import gymnasium as gym
import numpy as np

from suites.protocols.mpc.controllers import Controller
from suites.protocols.mpc.planners import PlanningError


@dataclasses.dataclass(frozen=True)
class Episode:
    """What one episode measured.

    Attributes:
        total_return: the sum of the environment's rewards.
        steps: steps taken (fewer than asked when the environment terminated).
        model_errors: per step, the controller model's one-step error on the real transition
            (empty for a controller without a model).
        plan_s: per step, seconds the controller took to choose the action (wall clock).
    """

    total_return: float
    steps: int
    model_errors: list[float]
    plan_s: list[float]


def run_episode(env: gym.Env, controller: Controller, steps: int, seed: int) -> Episode:
    """Run ``controller`` in ``env`` for ``steps`` steps (or until the env terminates).

    Args:
        env: the environment (a bare one: the loop is the time limit).
        controller: what acts.
        steps: the most steps to take.
        seed: seeds the environment's reset, so arms compared on one seed face the same start.

    Returns:
        The Episode.

    Raises:
        PlanningError: at the first step whose plan failed (no finite-scored candidate) or whose
            action is non-finite; its ``step`` is that step (0-based) and its message names it.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"run_episode: steps expected an int >= 1, got {steps!r}")
    obs, _ = env.reset(seed=seed)
    controller.reset(obs)
    total, errors, plan_s = 0.0, [], []
    taken = 0
    for t in range(steps):
        start = time.perf_counter()
        try:
            action = controller.act(obs)
        except PlanningError as err:
            raise err.at_step(t) from None
        plan_s.append(time.perf_counter() - start)
        if not np.isfinite(action).all():
            raise PlanningError(f"the controller returned a non-finite action {np.asarray(action).tolist()}", t)
        next_obs, reward, terminated, _, _ = env.step(action)
        error = controller.observe(obs, action, next_obs)
        if error is not None:
            errors.append(error)
        total += float(reward)
        taken += 1
        obs = next_obs
        if terminated:
            break
    return Episode(total, taken, errors, plan_s)
