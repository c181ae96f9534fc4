"""Seeded data collection on the task distributions, normalisation, support / query splits.

    from suites.data import collect, fit_normalizer, split_support_query
    train = collect(dist, dist.sample(16, rng), episodes=4, horizon=200, seed=0)
    norm = fit_normalizer(train)                 # training tasks only
    support, query = split_support_query(norm.apply(train), support_episodes=2)

This package uses suites.tasks, numpy and torch only (models enter as a plain callable policy).
"""

from suites.data.collect import BehaviourPolicy, collect, collect_switching_stream
from suites.data.normalize import Normalizer, fit_normalizer
from suites.data.task_data import TaskData, split_support_query

__all__ = [
    "BehaviourPolicy",
    "Normalizer",
    "TaskData",
    "collect",
    "collect_switching_stream",
    "fit_normalizer",
    "split_support_query",
]
