"""``TaskDistribution``: one family of tasks as data (space, env, horizon, reward), and the
array helpers the batched reward functions share.

A distribution knows its parameter space and its train / validation / test split (training tasks
from ``sample(n, rng)``, the fixed sets from ``validation_tasks(n)`` and ``test_tasks(n)``, and
``ood_test_tasks(n)`` where the space has an out-of-distribution region), how to build an environment for a task
(through gymnasium's registry, under the ``SSMMetaRL/`` namespace), its horizon, and a batched
reward computed from (observation, action, next observation) alone, so a model-based planner can
score imagined transitions without the simulator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar

import gymnasium as gym
import numpy as np
import torch

from suites.tasks.spaces import MAX_TEST_TASKS, ParamSpace, Split, TaskParams

Array = TypeVar("Array", np.ndarray, torch.Tensor)
"""A numpy array or a torch tensor; the batched rewards accept either and return the same kind."""

TaskRewardFn = Callable[[Any, Any, Any, TaskParams], Any]
"""reward(obs (..., obs_dim), action (..., act_dim), next_obs (..., obs_dim), task) -> (...)."""


def atan2(y: Array, x: Array) -> Array:
    """Element-wise arctan2 for numpy arrays and torch tensors alike."""
    if isinstance(y, torch.Tensor):
        return torch.atan2(y, x)
    return np.arctan2(y, x)


def square_sum(x: Array) -> Array:
    """Sum of squares over the last axis: (..., d) -> (...)."""
    return (x * x).sum(-1)


def clip(x: Array, low: float, high: float) -> Array:
    """``x`` clipped to [low, high] element-wise, numpy or torch (an action to its bounds)."""
    return x.clip(low, high)


class VectorTaskEnv(Protocol):
    """Many envs of a distribution stepped as one numpy computation (a fast path for collection).

    Shapes:
        reset() -> obs (n, obs_dim); step(actions (n, act_dim)) -> next_obs (n, obs_dim),
        reward (n,), done (n,) bool; reset_rows(mask (n,)) -> obs (n, obs_dim) with the masked
        rows back at their start.
    """

    @property
    def num_envs(self) -> int: ...

    @property
    def action_space(self) -> gym.spaces.Space: ...

    def reset(self) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def reset_rows(self, mask: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class TaskDistribution:
    """A task family: parameter space with train / validation / test split, environment, horizon, reward.

    Attributes:
        name: the task name used in suites, e.g. ``"halfcheetah-vel"``.
        family: ``"dynamics"`` (tasks differ in the transition function) or ``"reward"`` (tasks
            differ in the reward only).
        env_id: the gymnasium id, registered under ``SSMMetaRL/``.
        env_class: the environment class behind ``env_id``.
        space: the parameter space and its split (suites/tasks/spaces.py).
        horizon: steps per episode (the registered ``max_episode_steps``).
        reward_fn: the batched reward from (obs, action, next_obs, task).
        source: where the definition comes from (paper / repository).
        test_seed: seeds the fixed validation, test and OOD test streams (continuous spaces): the
            sets depend on it alone, never on a run's seed.
        vector_env: optional vectorised version of the env, built from one task per row;
            data collection uses it when present.
    """

    name: str
    family: Literal["dynamics", "reward"]
    env_id: str
    env_class: type[gym.Env]
    space: ParamSpace
    horizon: int
    reward_fn: TaskRewardFn
    source: str
    test_seed: int = 0
    vector_env: Callable[[list[TaskParams]], VectorTaskEnv] | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the task parameters, in order."""
        return self.space.names

    def params(self, **values: float) -> TaskParams:
        """A validated task of this distribution, e.g. ``dist.params(mass=1.3, length=0.7)``."""
        return self.space.validate(self.name, values)

    def check(self, task: Mapping[str, float]) -> TaskParams:
        """``task`` validated against this distribution; ValueError naming the bad field."""
        if isinstance(task, TaskParams) and task.task != self.name:
            raise ValueError(f"task {self.name!r}: expected parameters of this task, got {task!r}")
        if not isinstance(task, Mapping):
            raise ValueError(f"task {self.name!r}: expected TaskParams or a mapping, got {task!r}")
        return self.space.validate(self.name, dict(task))

    @property
    def shares_values(self) -> bool:
        """True when train, validation and test share their task values (the direction tasks: only
        seeds are held out); False when the splits are disjoint."""
        return self.space.shared

    @property
    def has_ood(self) -> bool:
        """Whether ``ood_test_tasks`` exists for this distribution."""
        return self.space.has_ood

    def sample(self, n: int, rng: np.random.Generator) -> list[TaskParams]:
        """``n`` tasks from the training split, drawn with ``rng``: never a validation, test or OOD task
        (except where the splits share their values, see ``shares_values``)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"task {self.name!r}: n expected a positive int, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"task {self.name!r}: rng expected a numpy Generator, got {rng!r}")
        return self.space.sample_train(self.name, n, rng)

    def _fixed(self, split: Split, n: int) -> list[TaskParams]:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_TEST_TASKS:
            raise ValueError(f"task {self.name!r}: n expected an int in [1, {MAX_TEST_TASKS}], got {n!r}")
        return self.space.fixed_set(self.name, split, n, self.test_seed)

    def validation_tasks(self, n: int) -> list[TaskParams]:
        """The first ``n`` tasks of the fixed validation set (same list on every call, whatever the
        run's seed): for tuning, selection and early stopping."""
        return self._fixed("validation", n)

    def test_tasks(self, n: int) -> list[TaskParams]:
        """The first ``n`` tasks of the fixed held-out test set (same list on every call, whatever the
        run's seed): for the final evaluation only."""
        return self._fixed("test", n)

    def ood_test_tasks(self, n: int) -> list[TaskParams]:
        """The first ``n`` tasks of the fixed out-of-distribution test set, outside the training range;
        ValueError for a distribution without one (``has_ood``)."""
        if not self.has_ood:
            raise ValueError(f"task {self.name!r}: no out-of-distribution test set")
        return self._fixed("ood", n)

    def split_of(self, task: Mapping[str, float]) -> Split | None:
        """The split whose region holds ``task`` ("train", "validation", "test" or "ood"); None for a
        valid task between the regions, and for every task of a space whose splits share values."""
        return self.space.split_of(self.check(task))

    def make_env(self, task: Mapping[str, float], **kwargs: Any) -> gym.Env:
        """``gym.make(env_id, **task, **kwargs)``: the wrapped env (time limit = horizon)."""
        params = self.check(task)
        try:
            env_kwargs: dict[str, Any] = {**params, **kwargs}
            return gym.make(self.env_id, **env_kwargs)
        except Exception as err:  # any failure to build is reported as this task's ValueError
            detail = " ".join(str(err).split())
            raise ValueError(
                f"task {self.name!r}: could not build env {self.env_id} with {params!r} and "
                f"kwargs {kwargs}: {type(err).__name__}: {detail}"
            ) from err

    def make_raw_env(self, task: Mapping[str, float]) -> gym.Env:
        """The bare environment (no time limit or checker wrappers), for fast batched loops."""
        params = self.check(task)
        try:
            return self.env_class(**dict(params))
        except Exception as err:
            detail = " ".join(str(err).split())
            raise ValueError(
                f"task {self.name!r}: could not build {self.env_class.__name__} with {params!r}: "
                f"{type(err).__name__}: {detail}"
            ) from err

    def reward(self, obs: Array, action: Array, next_obs: Array, task: Mapping[str, float]) -> Array:
        """Batched reward of transitions under ``task``, the same kind of array (numpy or torch) as ``obs``.

        Shapes:
            obs, next_obs (..., obs_dim) before and after the step; action (..., act_dim) -> (...).
        """
        return self.reward_fn(obs, action, next_obs, self.check(task))

    def describe(self) -> str:
        """One line: family, parameter space and its split, horizon."""
        return f"{self.family}: {self.space.describe()}; horizon {self.horizon}"
