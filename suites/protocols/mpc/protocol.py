"""The ``mpc`` protocol: zoo dynamics models, meta-trained and adapted online, drive an MPC.

For one cell (task, model, arm, seed), top to bottom:

1. collect seeded random-policy episodes on training tasks and normalise with their statistics
   (as the dynamics protocol does, with the same functions of ``suites.protocols.dynamics_training.train``);
2. train: the ``maml`` cell meta-trains the model with MetaMAML on recent-past windows (GrBAL's
   meta-training, Nagabandi, Clavera et al. 2019); when its training settings equal a dynamics
   protocol's on the same task, the run trains that model once and both protocols use it (so
   the model that drives the MPC is the one whose prediction error the dynamics protocol
   reports; the rows are the same either way); the ``oracle`` cell trains one model per
   held-out task on that task's own data, the same number of gradient steps (the dynamics
   protocol's joint training on one task);
3. on held-out dynamics-shift tasks, run episodes of a sampling-based MPC (random shooting or
   CEM, planners.py) that plans with the model's predicted observations and the task's
   batched reward, under each arm:
   - ``unadapted``: the meta-trained weights, never changed;
   - ``maml``: every ``adapt_every`` steps, ``adapt_steps`` inner SGD steps (learning rate
     ``adapt_lr``) on the last ``adapt_window`` real transitions, from the meta-trained weights
     (GrBAL);
   - ``maml+adapter``: the meta-trained weights updated by the Adapter every ``adapter_every``
     steps on the last ``adapt_window`` transitions, accumulating over the episode;
   - ``oracle``: the model trained on the true task, never changed (a reference only as good as
     its random-policy data: on a small budget it can score below the unadapted meta-trained
     model);
   - ``random``: uniform random actions, the floor.
   Every arm faces the same initial states (the same reset seeds) and the same planner samples.

Metrics: ``return`` (step 0: the mean over held-out tasks and episodes), ``model_error`` (step =
time step: the one-step squared error of the arm's model on the real transition, in normalised
target units, averaged over features, tasks and episodes), ``plan_ms`` (step 0: the median
planning time per control step), ``params``. The ``random`` arm has no model, so it reports
``return`` only.

References:
    Nagabandi, Clavera, Liu, Fearing, Abbeel, Levine, Finn (2019), "Learning to Adapt in Dynamic,
    Real-World Environments through Meta-Reinforcement Learning", ICLR.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from adaptation import AdaptationConfig, Adapter
from meta import MetaMAML
from models import SequenceModel, count_params, make_model
from suites.data import Normalizer, collect, fit_normalizer
from suites.protocols.base import Cell, Measurement
from suites.protocols.dynamics_training.settings import (
    MAX_LR,
    TrainingSettings,
    check_windows,
    require_at_most,
    require_positive,
)
from suites.protocols.dynamics_training.train import (
    ModelStore,
    TrainingKey,
    Windows,
    pretrain,
    train_dynamics,
    training_data,
    training_tasks,
)
from suites.protocols.mpc import (
    Episode,
    ModelController,
    Planner,
    PlannerConfig,
    RandomController,
    RewardFn,
    box_bounds,
    run_episode,
)
from suites.protocols.mpc.controllers import Controller
from suites.protocols.mpc.planners import PlanningError
from suites.tasks import TaskDistribution, TaskParams, get_distribution, tasks_of_family
from suites.tasks.spaces import MAX_TEST_TASKS

ARMS = ("unadapted", "maml", "maml+adapter", "oracle", "random")
"""Valid arms; all but ``random`` plan with a model and report model_error, plan_ms and params."""

ControllerFactory = Callable[[TaskParams], Controller]
"""A new controller for one held-out task."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MPCSettings(TrainingSettings):
    """Settings of the mpc protocol: the training fields (``TrainingSettings``) and its own.

    The training fields describe the ``maml`` cell's data collection and meta-training; when they
    equal a dynamics protocol's on the same task, one model is trained for both. The ``oracle``
    trains each of its models by joint training (``pretrain``): ``meta_iterations`` Adam steps at
    ``outer_lr`` on windows cut as the training tasks' are.

    Attributes:
        test_tasks: held-out tasks controlled per cell.
        episodes: MPC episodes per held-out task and arm.
        episode_steps: control steps per MPC episode.
        planner: "cem" or "random" (random shooting).
        plan_horizon: H, steps each candidate sequence looks ahead.
        candidates: N, candidate sequences per planning round.
        cem_iterations: CEM rounds per control step.
        elites: CEM elites per round.
        adapt_window: M, the recent transitions each online adaptation uses.
        adapt_every: steps between MAML adaptations (GrBAL adapts every step: 1); at most
            ``episode_steps``, as are ``adapt_window`` and ``adapter_every``.
        adapt_steps: k, inner SGD steps per online MAML adaptation.
        adapt_lr: SGD learning rate of the online MAML adaptation; None: ``inner_lr`` (GrBAL's
            choice). 0.1 overshoots on MPC windows, whose states lie outside the random-policy
            data (heavy pendulum, MLP: one-step error 0.05 -> 0.12 after adapting); 0.03 halves it.
        adapter_every: steps between Adapter updates.
        adapter_lr: Adapter learning rate; 1e-3 cuts the one-step error on a heavy pendulum (MLP,
            updating every step) from 0.057 to 0.015.
        adapter_steps: Adapter optimiser steps per update.
        oracle_episodes: random-policy episodes of the true task the oracle trains on; with the
            ``oracle`` arm, more than ``support_episodes`` and enough for ``query_windows``
            (``check_arms``, called when a suite is loaded).
    """

    # this protocol's defaults of the training fields that have no common one
    train_tasks: int = 16
    sequence_length: int = 20
    meta_iterations: int = 300
    inner_lr: float = 0.03

    test_tasks: int = 2
    episodes: int = 1
    episode_steps: int = 100
    planner: str = "cem"
    plan_horizon: int = 15
    candidates: int = 64
    cem_iterations: int = 2
    elites: int = 8
    adapt_window: int = 16
    adapt_every: int = 1
    adapt_steps: int = 1
    adapt_lr: float | None = None
    adapter_every: int = 1
    adapter_lr: float = 1e-3
    adapter_steps: int = 1
    oracle_episodes: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        unchecked = ("planner", "adapt_lr") if self.adapt_lr is None else ("planner",)
        require_positive(self, (name for name in self.protocol_fields() if name not in unchecked))
        require_at_most(self, MPC_MAX)
        for name in ("adapt_window", "adapt_every", "adapter_every"):
            if getattr(self, name) > self.episode_steps:
                raise ValueError(f"{name}: expected at most episode_steps {self.episode_steps}, "
                                 f"got {getattr(self, name)}")  # fmt: skip
        if self.oracle_episodes < 2:
            raise ValueError(f"oracle_episodes: expected at least 2 (support and query), got {self.oracle_episodes}")
        self.planner_config()  # the planner's own checks, with its field names

    def check_arms(self, arms: tuple[str, ...]) -> None:
        """Raise ValueError if the ``oracle`` arm is among ``arms`` and its data cannot be cut into
        windows as the training tasks' are: ``oracle_episodes`` episodes of ``horizon`` steps, the
        first ``support_episodes`` giving support windows, the rest query windows."""
        if "oracle" not in arms:
            return
        if self.oracle_episodes <= self.support_episodes:
            raise ValueError(f"oracle_episodes: expected more than support_episodes {self.support_episodes} with "
                             f"the oracle arm, got {self.oracle_episodes}")  # fmt: skip
        check_windows(self, "query_windows", self.query_windows, self.oracle_episodes - self.support_episodes,
                      "with the oracle arm, oracle_episodes - support_episodes")  # fmt: skip

    def planner_config(self) -> PlannerConfig:
        """The planner these settings describe."""
        return PlannerConfig(self.planner, self.plan_horizon, self.candidates, self.cem_iterations, self.elites)

    @property
    def online_lr(self) -> float:
        """The online MAML adaptation's learning rate: ``adapt_lr``, or ``inner_lr`` if unset."""
        return self.inner_lr if self.adapt_lr is None else self.adapt_lr


MPC_MAX: dict[str, float] = {
    "test_tasks": MAX_TEST_TASKS,
    "episodes": 10_000,
    "episode_steps": 1_000_000,
    "plan_horizon": 10_000,
    "candidates": 1_000_000,
    "cem_iterations": 1_000,
    "adapt_steps": 1_000,
    "adapt_lr": MAX_LR,
    "adapter_lr": MAX_LR,
    "adapter_steps": 1_000,
    "oracle_episodes": 100_000,
}
"""Upper bounds of the mpc protocol's own fields (``test_tasks``: the held-out pool's size)."""


def run(cell: Cell) -> list[Measurement]:
    """Run one mpc cell (see the module docstring)."""
    s: MPCSettings = cell.settings
    dist = get_distribution(cell.task)
    if dist.family != "dynamics":
        raise ValueError(f"mpc task: expected a dynamics-shift task {tasks_of_family('dynamics')}, got {cell.task!r}")
    test_params = dist.test_tasks(s.test_tasks)

    if cell.training_arm == "oracle":
        # the training tasks' statistics normalise the oracle's data too, as they do the held-out tasks'
        normalizer = fit_normalizer(training_data(cell.task, cell.seed, s))
        _, rng = training_tasks(cell.task, cell.seed, s.train_tasks)  # window sampling continues the seed's stream
        models = []
        for i, task in enumerate(test_params):
            data = collect(dist, [task], s.oracle_episodes, s.horizon, seed=40_000 + 100 * cell.seed + i)
            model = make_model(cell.model, data.inputs.shape[-1], data.targets.shape[-1],
                               param_budget=cell.param_budget)  # fmt: skip
            pretrain(model, Windows.from_data(normalizer.apply(data), s), s, rng)
            models.append(model.eval())
        episodes = []
        for task, m in zip(test_params, models, strict=True):
            make_oracle = functools.partial(_controller, m, normalizer, dist, s=s, seed=cell.seed)
            episodes += _episodes(dist, [task], s, cell.seed, make_oracle, "oracle")
        return _measurements("oracle", episodes, count_params(models[0]))

    if cell.training_arm != "maml":
        raise ValueError(f"mpc arm: expected a training arm 'maml' or 'oracle', got {cell.training_arm!r}")
    # the meta-trained model: trained here, or loaded if another cell of the run (the dynamics
    # protocol's, when its training settings are these) already trained the same one
    key = TrainingKey(cell.task, cell.model, cell.param_budget, cell.seed, "maml", s)
    trained = train_dynamics(key, ModelStore(cell.store) if cell.store else None)
    model, normalizer = trained.model, trained.normalizer
    # online adaptation fits plain windows of one episode (no reset mask): the same weights, plain MSE
    maml = MetaMAML(model, inner_lr=s.online_lr)
    adapter = Adapter(model, AdaptationConfig(lr=s.adapter_lr, num_steps=s.adapter_steps, grad_clip_norm=1.0))
    out: list[Measurement] = []
    for arm in cell.reported_arms:
        if arm == "random":
            space = dist.make_raw_env(test_params[0]).action_space
            eps = _episodes(dist, test_params, s, cell.seed, functools.partial(_random_controller, space, cell.seed),
                            arm)  # fmt: skip
            out += _measurements(arm, eps, None)
            continue
        with adapter.session():  # the Adapter's updates never outlive its arm

            def make(task: TaskParams, arm: str = arm) -> Controller:
                return _controller(model, normalizer, dist, task, s, cell.seed,
                                   maml=maml if arm == "maml" else None,
                                   adapter=adapter if arm == "maml+adapter" else None)  # fmt: skip

            out += _measurements(arm, _episodes(dist, test_params, s, cell.seed, make, arm), count_params(model))
    return out


def planner_seed(seed: int) -> int:
    """The planner's seed for a cell seed (its own stream, apart from collection and episodes)."""
    return 50_000 + seed


def _controller(
    model: SequenceModel,
    normalizer: Normalizer,
    dist: TaskDistribution,
    task: TaskParams,
    s: MPCSettings,
    seed: int,
    maml: MetaMAML | None = None,
    adapter: Adapter | None = None,
) -> Controller:
    def reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return dist.reward_fn(obs, action, next_obs, task)  # task validated once, by test_tasks

    reward_fn: RewardFn = reward
    low, high = box_bounds(dist.make_raw_env(task).action_space)
    # the planner's samples depend on the cell's seed only: all arms of a seed draw the same ones,
    # and seeds draw their own
    planner = Planner(s.planner_config(), low, high, seed=planner_seed(seed))
    every = s.adapter_every if adapter is not None else s.adapt_every
    return ModelController(model, normalizer, reward_fn, planner, maml=maml, adapter=adapter, window=s.adapt_window,
                           every=every, maml_steps=s.adapt_steps)  # fmt: skip


def _random_controller(space: gym.spaces.Space, seed: int, task: TaskParams) -> Controller:
    return RandomController(space, seed)


def _episodes(dist: TaskDistribution, tasks: list[TaskParams], s: MPCSettings, seed: int,
              make_controller: ControllerFactory, arm: str) -> list[Episode]:  # fmt: skip
    """``s.episodes`` episodes per task, each from a reset seeded by (seed, task, episode).

    A planning failure (no candidate with a finite return) fails the cell, naming the arm, task,
    episode and control step: a truncated episode's return is never reported."""
    episodes = []
    for i, task in enumerate(tasks):
        env = dist.make_raw_env(task)
        controller = make_controller(task)
        for j in range(s.episodes):
            torch.manual_seed(seed)  # any torch randomness of a controller is the same for every arm
            try:
                episodes.append(run_episode(env, controller, s.episode_steps, seed=30_000 + 1_000 * seed + 10 * i + j))
            except PlanningError as err:
                raise PlanningError(f"arm {arm}, task {task}, episode {j}: {err.cause}", err.step) from err
        env.close()
    return episodes


def _measurements(arm: str, episodes: list[Episode], params: int | None) -> list[Measurement]:
    out = [Measurement(arm, "return", 0, float(np.mean([e.total_return for e in episodes])))]
    if params is None:
        return out
    longest = max(len(e.model_errors) for e in episodes)
    for t in range(longest):  # episodes that terminated early leave the mean at their last step
        errors = [e.model_errors[t] for e in episodes if t < len(e.model_errors)]
        out.append(Measurement(arm, "model_error", t, float(np.mean(errors))))
    plan = [p for e in episodes for p in e.plan_s]
    out.append(Measurement(arm, "plan_ms", 0, 1e3 * statistics.median(plan)))
    out.append(Measurement(arm, "params", 0, float(params)))
    return out
