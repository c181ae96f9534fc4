"""Collection throughput against raw gymnasium stepping of the same env.

Raw: ``gym.make(env_id, **task)`` stepped with uniform random actions (drawn beforehand, so the
clock sees ``env.step`` only), reset when an episode ends. Collect: ``collect`` with the default
random policy, including its resets, recording and tensor conversion. Both run interleaved in
one process, ``repeats`` times each; the medians are compared. The clock is the process's CPU
time (``time.process_time``): the machine is shared, and wall time would mostly measure the
other processes.

    python -m suites.data.throughput [task ...]
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time

import numpy as np
import torch

from suites.data.collect import collect
from suites.tasks import TASKS, get_task


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Median environment steps per second of both paths.

    Attributes:
        task: the distribution's name.
        raw_steps_per_s: ``env.step`` of one ``gym.make`` env with random actions.
        collect_steps_per_s: ``collect`` over ``episodes`` envs of one task.
    """

    task: str
    raw_steps_per_s: float
    collect_steps_per_s: float

    @property
    def ratio(self) -> float:
        """collect / raw: 1 means no overhead, 0.85 the target's lower bound."""
        return self.collect_steps_per_s / self.raw_steps_per_s


def _raw_steps_per_s(name: str, steps: int, seed: int) -> float:
    dist = get_task(name)
    env = dist.make_env(dist.test_tasks(1)[0])
    env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    actions = rng.uniform(low, high, size=(steps, *low.shape)).astype(np.float32)
    start = time.process_time()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    elapsed = time.process_time() - start
    env.close()
    return steps / elapsed


def _collect_steps_per_s(name: str, tasks: int, episodes: int, horizon: int, seed: int) -> float:
    dist = get_task(name)
    start = time.process_time()
    collect(dist, dist.test_tasks(tasks), episodes=episodes, horizon=horizon, seed=seed)
    return tasks * episodes * horizon / (time.process_time() - start)


def measure(
    name: str, tasks: int = 8, episodes: int = 8, horizon: int = 200, repeats: int = 5
) -> Throughput:
    """Median steps/s of raw stepping and of ``collect`` for task ``name``, interleaved.

    ``collect`` runs ``tasks`` tasks, so building its env pool once is part of its time.
    """
    raw, col = [], []
    for r in range(repeats):
        raw.append(_raw_steps_per_s(name, tasks * episodes * horizon, seed=r))
        col.append(_collect_steps_per_s(name, tasks, episodes, horizon, seed=r))
    return Throughput(name, statistics.median(raw), statistics.median(col))


def main(argv: list[str]) -> None:
    """Print the throughput table of the named tasks (all when none is named)."""
    torch.set_num_threads(1)
    print(f"{'task':28s} {'raw steps/s':>12s} {'collect steps/s':>16s} {'ratio':>6s}")
    for name in argv or TASKS:
        t = measure(name)
        print(f"{name:28s} {t.raw_steps_per_s:12.0f} {t.collect_steps_per_s:16.0f} {t.ratio:6.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
