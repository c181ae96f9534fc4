"""``TaskData``: transitions of several tasks, shaped for sequence models, and the support /
query split.

Shapes (K tasks, E episodes per task, T steps):
    inputs  (K, E, T, obs_dim + act_dim)  float32  [observation, action (one-hot if discrete)]
    targets (K, E, T, obs_dim)            float32  next_obs - obs
    starts  (K, E, T)                     bool     True where an episode starts (a ``reset``)
    rewards (K, E, T)                     float32  the env's reward of each transition
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from suites.tasks.spaces import TaskParams

if TYPE_CHECKING:
    from suites.data.normalize import Normalizer


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Rollouts of K tasks, E episodes each, T steps per episode row.

    Attributes:
        inputs: [observation, action] per step, (K, E, T, obs_dim + act_dim).
        targets: observation change next_obs - obs per step, (K, E, T, obs_dim).
        starts: episode-start mask (K, E, T); ``starts[..., 0]`` is always True, later True
            entries mark an automatic reset after a terminated episode. Usable as ``reset``.
        rewards: the environment's reward per step, (K, E, T).
        tasks: the K tasks' parameters (for a switching stream: the task it starts in).
        task_name: the distribution's name.
        obs_dim: observation size.
        act_dim: action size (the number of actions when discrete, one-hot encoded).
        normalizer: the normalizer applied to inputs and targets, or None when raw.
        switch: for a switching stream, (step, task) the stream switches to at that step.
    """

    inputs: Tensor
    targets: Tensor
    starts: Tensor
    rewards: Tensor
    tasks: tuple[TaskParams, ...]
    task_name: str
    obs_dim: int
    act_dim: int
    normalizer: Normalizer | None = None
    switch: tuple[int, TaskParams] | None = None

    def __post_init__(self) -> None:
        k, e, t = self.starts.shape
        expect = {
            "inputs": (k, e, t, self.obs_dim + self.act_dim),
            "targets": (k, e, t, self.obs_dim),
            "rewards": (k, e, t),
        }
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"TaskData.{name}: expected shape {shape}, got {got}")
        if len(self.tasks) != k:
            raise ValueError(f"TaskData.tasks: expected {k} tasks, got {len(self.tasks)}")
        if self.starts.dtype != torch.bool:
            raise ValueError(f"TaskData.starts: expected dtype torch.bool, got {self.starts.dtype}")

    @property
    def num_tasks(self) -> int:
        """K."""
        return int(self.starts.shape[0])

    @property
    def num_episodes(self) -> int:
        """E."""
        return int(self.starts.shape[1])

    @property
    def horizon(self) -> int:
        """T."""
        return int(self.starts.shape[2])

    def select_episodes(self, index: slice) -> TaskData:
        """The same tasks with only the episodes ``index`` (a slice of the E axis)."""
        return dataclasses.replace(
            self,
            inputs=self.inputs[:, index],
            targets=self.targets[:, index],
            starts=self.starts[:, index],
            rewards=self.rewards[:, index],
        )


def split_support_query(data: TaskData, support_episodes: int) -> tuple[TaskData, TaskData]:
    """Support and query sets of every task from disjoint episodes of that task.

    Args:
        data: rollouts with E >= 2 episodes per task.
        support_episodes: the first ``support_episodes`` episodes form the support set, the
            remaining E - support_episodes the query set.

    Returns:
        (support, query), each a TaskData over the same K tasks.
    """
    e = data.num_episodes
    if isinstance(support_episodes, bool) or not isinstance(support_episodes, int) or not 1 <= support_episodes < e:
        raise ValueError(
            f"split_support_query: support_episodes expected an int in [1, {e - 1}] "
            f"(data has {e} episodes per task), got {support_episodes!r}"
        )
    return data.select_episodes(slice(0, support_episodes)), data.select_episodes(slice(support_episodes, e))
