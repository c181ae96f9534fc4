"""The ``mpc`` protocol and the model-based control it owns: sampling planners, imagined rollouts
of dynamics models, controllers and the control loop. protocol.py drives zoo models through them.

    planner = Planner(PlannerConfig("cem", horizon=10, candidates=64), low, high, seed=0)
    controller = ModelController(model, normalizer, reward, planner, maml=maml, window=16, every=4)
    episode = run_episode(env, controller, steps=100, seed=0)   # return, model errors, plan times

Files: planners.py (random shooting, CEM), rollout.py (a model as a dynamics function, imagined
returns), controllers.py (random, known dynamics, adapting model), loop.py (one episode),
protocol.py (``MPCSettings`` and ``run(cell)``). Imports: meta, adaptation, models, suites.data,
suites.tasks, suites.protocols.dynamics_training.
"""

from suites.protocols.mpc.controllers import (
    Controller,
    DynamicsController,
    ModelController,
    RandomController,
    box_bounds,
)
from suites.protocols.mpc.loop import Episode, run_episode
from suites.protocols.mpc.planners import Planner, PlannerConfig, cem, random_shooting
from suites.protocols.mpc.rollout import DynamicsFn, ModelDynamics, RewardFn, imagined_returns, repeat_state

__all__ = [
    "Controller",
    "DynamicsController",
    "DynamicsFn",
    "Episode",
    "ModelController",
    "ModelDynamics",
    "Planner",
    "PlannerConfig",
    "RandomController",
    "RewardFn",
    "box_bounds",
    "cem",
    "imagined_returns",
    "random_shooting",
    "repeat_state",
    "run_episode",
]
