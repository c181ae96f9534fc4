"""Task distributions on gymnasium and MuJoCo: dynamics-shift and reward-defined families.

    from suites.tasks import TASKS, get_distribution
    dist = get_distribution("halfcheetah-vel")
    train = dist.sample(8, np.random.default_rng(0))  # training split
    test = dist.test_tasks(8)                         # fixed held-out set
    env = dist.make_env(train[0])     # gym.make("SSMMetaRL/HalfCheetahVel-v0", target_velocity=...)
    r = dist.reward(obs, action, next_obs, train[0])  # batched, numpy or torch

Every env supports ``env.unwrapped.set_task(params)`` mid-episode. suites/tasks/README.md holds
the table of tasks, ranges and sources.
"""

from suites.tasks.base import TaskDistribution
from suites.tasks.point_nav import PointNavVec
from suites.tasks.registration import DISTRIBUTIONS, get_distribution, register_envs, tasks_of_family
from suites.tasks.spaces import TaskParams

TASKS: tuple[str, ...] = tuple(DISTRIBUTIONS)
"""Names of every task distribution."""

register_envs()

__all__ = ["TASKS", "PointNavVec", "TaskDistribution", "TaskParams", "get_distribution", "tasks_of_family"]
