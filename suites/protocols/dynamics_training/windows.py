"""Cut collected episodes into support / query windows for meta-learning.

Collected data is (tasks, episodes, T, D). The first ``support_episodes`` episodes of a task give
its support windows and the rest its query windows, so support and query never share an episode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_windows(x: Tensor, length: int) -> Tensor:
    """(tasks, episodes, T, D) -> (tasks, episodes * (T // length), length, D), dropping the tail."""
    tasks, episodes, steps, dim = x.shape
    if length > steps:
        raise ValueError(f"sequence_length: expected at most the horizon {steps}, got {length}")
    usable = (steps // length) * length
    return x[:, :, :usable].reshape(tasks, episodes * (steps // length), length, dim)


def split_episodes(x: Tensor, support_episodes: int) -> tuple[Tensor, Tensor]:
    """Split (tasks, episodes, ...) into support and query episodes."""
    episodes = x.shape[1]
    if not 1 <= support_episodes < episodes:
        raise ValueError(
            f"support_episodes: expected between 1 and {episodes - 1} (episodes_per_task - 1), got {support_episodes}"
        )
    return x[:, :support_episodes], x[:, support_episodes:]


def sample_windows(
    windows: Tensor, task_idx: np.ndarray, count: int, rng: np.random.Generator
) -> Tensor:
    """For each task in ``task_idx``, ``count`` windows drawn without replacement: (n, count, L, D)."""
    per_task = windows.shape[1]
    if count > per_task:
        raise ValueError(f"windows: expected at most {per_task} windows per task, asked for {count}")
    picks = np.stack([rng.choice(per_task, size=count, replace=False) for _ in task_idx])
    return windows[torch.as_tensor(task_idx)[:, None], torch.as_tensor(picks)]
