"""The ``policy`` protocol and the reinforcement learning it owns (MAML-RL with zoo models as policies).

- ``policies``: Gaussian / categorical heads over a zoo model (``make_policy``);
- ``envs``: K tasks x N episodes stepped as one batch, one episode per row;
- ``sampler``: episodes with shared or per-task (fast) weights -> ``Trajectories``;
- ``returns``: discounted returns-to-go, per-task advantage normalisation;
- ``baseline``: rllab's linear feature baseline, fitted per task in closed form;
- ``pg``: the policy-gradient surrogates, the inner adaptation and the MAML-RL meta-loss;
- ``protocol``: ``PolicySettings`` and ``run(cell)``: meta-training and returns on held-out tasks.

Imports: meta, models, suites.tasks.
"""

from suites.protocols.policy.envs import GymBatch, make_batch_env
from suites.protocols.policy.pg import PGBatch, adapt, meta_loss, post_loss, process, surrogate
from suites.protocols.policy.policies import CategoricalPolicy, GaussianPolicy, Policy, make_policy
from suites.protocols.policy.sampler import Trajectories, rollout

__all__ = [
    "CategoricalPolicy",
    "GaussianPolicy",
    "GymBatch",
    "PGBatch",
    "Policy",
    "Trajectories",
    "adapt",
    "make_batch_env",
    "make_policy",
    "meta_loss",
    "post_loss",
    "process",
    "rollout",
    "surrogate",
]
