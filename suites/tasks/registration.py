"""Every task distribution by name, and their registration with gymnasium under ``SSMMetaRL/``.

After ``import suites.tasks``, ``gym.make("SSMMetaRL/PendulumMassLength-v0", mass=1.3,
length=0.7)`` builds a task env with the distribution's horizon as its time limit.
"""

from __future__ import annotations

import gymnasium as gym

from suites.tasks import ant, halfcheetah, pendulum, point_nav
from suites.tasks.base import TaskDistribution

DISTRIBUTIONS: dict[str, TaskDistribution] = {
    d.name: d
    for d in (
        pendulum.DISTRIBUTION,
        *halfcheetah.DISTRIBUTIONS,
        *ant.DISTRIBUTIONS,
        point_nav.DISTRIBUTION,
    )
}


def register_envs() -> None:
    """Register every distribution's env class with gymnasium (idempotent)."""
    for dist in DISTRIBUTIONS.values():
        if dist.env_id not in gym.registry:
            entry = f"{dist.env_class.__module__}:{dist.env_class.__name__}"
            gym.register(id=dist.env_id, entry_point=entry, max_episode_steps=dist.horizon)


def tasks_of_family(family: str) -> list[str]:
    """Names of the distributions of one family, "dynamics" or "reward", in registry order."""
    if family not in ("dynamics", "reward"):
        raise ValueError(f"family: expected 'dynamics' or 'reward', got {family!r}")
    return [name for name, dist in DISTRIBUTIONS.items() if dist.family == family]


def get_distribution(name: str) -> TaskDistribution:
    """The distribution registered as ``name``; ValueError listing the valid names otherwise."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"task: unknown name {name!r}; expected one of {sorted(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[name]
