"""Collection throughput against raw gymnasium stepping of the same env.

Raw: ``gym.make(env_id, **task)`` stepped with uniform random actions (drawn beforehand, so the
clock sees ``env.step`` only), reset when an episode ends. Collect: ``collect`` with the default
random policy, including building its env pool (or the distribution's vectorised env), resets,
recording and tensor conversion.
Vector: ``gymnasium.vector.SyncVectorEnv`` over the same number of ``gym.make`` envs stepped with
pre-drawn actions and nothing recorded (the alternative to collect's loop over bare envs).
All run interleaved in one process, ``repeats`` times each; medians are reported. The clock
is the process's CPU time (``time.process_time``): the machine is shared, and wall time would
mostly measure the other processes.

    python -m suites.data.throughput [task ...]
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from functools import partial

import gymnasium as gym
import numpy as np
import torch

from suites.data.collect import collect
from suites.tasks import TASKS, get_distribution


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Median environment steps per second of both paths.

    Attributes:
        task: the distribution's name.
        raw_steps_per_s: ``env.step`` of one ``gym.make`` env with random actions.
        collect_steps_per_s: ``collect`` over ``episodes`` envs of one task.
        ratio: median over repeats of collect / raw, each pair measured back to back (load
            from other processes shifts both alike); 1 means no overhead, 0.85 is the target.
        vector_steps_per_s: ``SyncVectorEnv`` over ``episodes`` wrapped envs, nothing recorded.
    """

    task: str
    raw_steps_per_s: float
    collect_steps_per_s: float
    ratio: float
    vector_steps_per_s: float


def _raw_steps_per_s(name: str, steps: int, seed: int) -> float:
    dist = get_distribution(name)
    env = dist.make_env(dist.validation_tasks(1)[0])
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


def _vector_steps_per_s(name: str, steps: int, episodes: int, seed: int) -> float:
    dist = get_distribution(name)
    task = dist.validation_tasks(1)[0]
    venv = gym.vector.SyncVectorEnv([partial(dist.make_env, task) for _ in range(episodes)])
    venv.reset(seed=seed)
    space = venv.single_action_space
    rng = np.random.default_rng(seed)
    shape = (steps // episodes, episodes, *space.shape)  # type: ignore[misc]
    actions = rng.uniform(space.low, space.high, size=shape).astype(np.float32)  # type: ignore[attr-defined]
    start = time.process_time()
    for a in actions:
        venv.step(a)
    elapsed = time.process_time() - start
    venv.close()
    return len(actions) * episodes / elapsed


def _collect_steps_per_s(name: str, tasks: int, episodes: int, horizon: int, seed: int) -> float:
    dist = get_distribution(name)
    start = time.process_time()
    collect(dist, dist.validation_tasks(tasks), episodes=episodes, horizon=horizon, seed=seed)
    return tasks * episodes * horizon / (time.process_time() - start)


def measure(name: str, tasks: int = 4, episodes: int = 8, horizon: int = 200, repeats: int = 7) -> Throughput:
    """Median steps/s of raw stepping and of ``collect`` for task ``name``, interleaved.

    ``collect`` runs ``tasks`` tasks, so building its env pool once is part of its time.
    """
    raw, col, vec = [], [], []
    for r in range(repeats):
        vec.append(_vector_steps_per_s(name, tasks * episodes * horizon, episodes, seed=r))
        raw.append(_raw_steps_per_s(name, tasks * episodes * horizon, seed=r))
        col.append(_collect_steps_per_s(name, tasks, episodes, horizon, seed=r))
    ratios = [c / r for c, r in zip(col, raw, strict=True)]
    return Throughput(
        name,
        statistics.median(raw),
        statistics.median(col),
        statistics.median(ratios),
        statistics.median(vec),
    )


def main(argv: list[str]) -> None:
    """Print the throughput table of the named tasks (all when none is named)."""
    torch.set_num_threads(1)
    print("| task | raw steps/s | collect steps/s | collect / raw | SyncVectorEnv steps/s |")
    print("|---|---|---|---|---|")
    for name in argv or TASKS:
        t = measure(name)
        print(
            f"| {name} | {t.raw_steps_per_s:.0f} | {t.collect_steps_per_s:.0f} | {t.ratio:.2f} "
            f"| {t.vector_steps_per_s:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
