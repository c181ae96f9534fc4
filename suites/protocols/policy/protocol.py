"""The ``policy`` protocol: MAML-RL (Finn et al. 2017) with every zoo model as the policy.

For one cell (reward-defined task, model, arm, seed), top to bottom:

1. build the policy: the zoo model, sized to the parameter budget, under a Gaussian head with a
   learned state-independent log-std (categorical for discrete actions); recurrent models carry
   their state through an episode and start every episode from a fresh state;
2. train for ``meta_iterations`` outer steps on ``meta_batch`` training tasks each:
   ``maml``: sample ``episodes_per_task`` episodes per task with theta, fit the per-task linear
   baseline, take ``inner_steps`` policy-gradient steps (each on episodes sampled with the
   current fast weights), sample episodes with the adapted weights and take one Adam step on
   the post-adaptation surrogate, second order through the inner steps (suites/protocols/policy/pg.py says
   which curvature estimator) unless ``first_order``;
   ``pretrain``: joint REINFORCE on the same tasks with the same number of Adam updates and the
   same episodes per update ((inner_steps + 1) x episodes_per_task per task), no inner loop;
3. on held-out tasks (``dist.test_tasks``): the average return of the episodes sampled after
   k = 0..K inner policy-gradient steps, each step on the episodes of the step before (metric
   ``return``, step = k), as MAML-RL evaluates; the meta-training curve (``meta_train_return``,
   step = iteration: the average post-adaptation return of the meta-batch for ``maml``, the
   average return of the sampled episodes for ``pretrain``); ``time_meta_train_s``; ``params``.

Outer optimiser: Adam on the policy-gradient surrogate, one step per meta-batch, instead of the
paper's TRPO. One first-order step per batch of fresh episodes keeps the meta-gradient exactly
the derivative the surrogate defines (a trust-region or PPO-style clipped outer step would need a
line search or several passes of the second-order inner loop per batch, several times the cost),
and Adam's per-parameter step sizes make one learning rate work for every model in the zoo.

References:
    Finn, Abbeel, Levine (2017), Model-Agnostic Meta-Learning, ICML; cbfinn/maml_rl.
    Rothfuss et al. (2019), ProMP: Proximal Meta-Policy Search, ICLR.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict

import numpy as np
import torch

from meta.functional import Params
from models import count_params
from suites.protocols.base import Cell, Measurement
from suites.protocols.dynamics_training.settings import MAX_LR, check_types, require_at_most
from suites.protocols.policy import Policy, adapt, make_batch_env, make_policy, meta_loss, process, rollout
from suites.protocols.policy.pg import ESTIMATORS, PGBatch, post_loss
from suites.tasks import TaskDistribution, TaskParams, get_distribution, tasks_of_family
from suites.tasks.spaces import MAX_TEST_TASKS


@dataclasses.dataclass(frozen=True)
class PolicySettings:
    """Budgets and evaluation settings of the policy protocol.

    Checked when built: types (numbers finite), the ranges below and the bounds in
    ``POLICY_MAX`` (``test_tasks``: at most the held-out pool), ``init_std`` at least
    ``MIN_INIT_STD``.

    Attributes:
        meta_iterations: outer steps (and Adam updates of the pretrain arm).
        meta_batch: training tasks per outer step.
        episodes_per_task: episodes sampled per task for each inner step and for the
            post-adaptation objective (MAML-RL: 20).
        horizon: steps per episode; 0 means the task's own horizon (100 point-nav, 200 MuJoCo).
        inner_steps: inner policy-gradient steps during meta-training (1 to 3).
        inner_lr: alpha, the inner step size (also used for adaptation at test time).
        outer_lr: Adam learning rate of the outer step (and of pretraining).
        gamma: discount of the returns-to-go in the advantages.
        first_order: first-order MAML (no second derivatives through the inner steps).
        estimator: curvature estimator of the inner surrogate: "lvc" (ProMP) or "reinforce"
            (the MAML-RL code's log-likelihood surrogate).
        init_std: initial standard deviation of the Gaussian policy.
        test_tasks: held-out tasks evaluated per cell.
        test_episodes: episodes per held-out task for each inner step and each return.
        eval_inner_steps: K; the return is recorded after 0..K inner steps.
        log_every: record the training return every this many iterations.
    """

    meta_iterations: int = 40
    meta_batch: int = 10
    episodes_per_task: int = 10
    horizon: int = 0
    inner_steps: int = 1
    inner_lr: float = 0.1
    outer_lr: float = 0.005
    gamma: float = 0.99
    first_order: bool = False
    estimator: str = "lvc"
    init_std: float = 1.0
    test_tasks: int = 10
    test_episodes: int = 10
    eval_inner_steps: int = 3
    log_every: int = 1

    def __post_init__(self) -> None:
        check_types(self)  # ints, finite numbers (no inf, no NaN), a string estimator, a bool first_order
        for name in ("meta_iterations", "meta_batch", "episodes_per_task", "test_tasks", "test_episodes", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        for name, low, high in (("horizon", 0, 10_000), ("inner_steps", 1, 3), ("eval_inner_steps", 0, 10)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
        for name in ("inner_lr", "outer_lr", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}: expected a positive float, got {value!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int | float) or not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma: expected a float in [0, 1], got {self.gamma!r}")
        if not isinstance(self.first_order, bool):
            raise ValueError(f"first_order: expected a bool, got {self.first_order!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {list(ESTIMATORS)}, got {self.estimator!r}")
        require_at_most(self, POLICY_MAX)
        if self.init_std < MIN_INIT_STD:
            raise ValueError(f"init_std: expected at least {MIN_INIT_STD}, got {self.init_std!r}")


POLICY_MAX: dict[str, float] = {
    "meta_iterations": 10_000_000,
    "meta_batch": 100_000,
    "episodes_per_task": 100_000,
    "inner_lr": MAX_LR,
    "outer_lr": MAX_LR,
    "init_std": 1_000.0,
    "test_tasks": MAX_TEST_TASKS,
    "test_episodes": 100_000,
    "log_every": 10_000_000,
}
"""Upper bounds of the policy settings (``test_tasks``: the held-out pool's size)."""

MIN_INIT_STD = 1e-6
"""Lower bound of ``init_std``: an action off the mean has a log-probability of order -1/std^2, which
overflows float32 below about 1e-19; 1e-6 stays far from that."""


def run(cell: Cell) -> list[Measurement]:
    """Run one policy cell (see the module docstring)."""
    s: PolicySettings = cell.settings
    dist = get_distribution(cell.task)
    if dist.family != "reward":
        raise ValueError(f"task: expected a reward-defined task {tasks_of_family('reward')}, got {cell.task!r}")
    rng = np.random.default_rng(cell.seed)
    gen = torch.Generator().manual_seed(cell.seed)
    horizon = s.horizon or dist.horizon

    # 1. the policy
    probe = dist.make_raw_env(dist.validation_tasks(1)[0])
    obs_dim = int(probe.observation_space.shape[0])  # type: ignore[index]
    policy = make_policy(cell.model, obs_dim, probe.action_space, param_budget=cell.param_budget, init_std=s.init_std)
    probe.close()
    out = [Measurement(cell.training_arm, "params", 0, float(count_params(policy)))]

    # 2. training
    start = time.perf_counter()
    train = _train_maml if cell.training_arm == "maml" else _pretrain
    curve = train(policy, dist, s, horizon, rng, gen)
    out.append(Measurement(cell.training_arm, "time_meta_train_s", 0, time.perf_counter() - start))
    out += [Measurement(cell.training_arm, "meta_train_return", it, value) for it, value in curve]

    # 3. held-out evaluation
    returns = evaluate(policy, dist, dist.test_tasks(s.test_tasks), s, horizon, gen, seed=10_000 + cell.seed)
    out += [Measurement(cell.training_arm, "return", k, value) for k, value in enumerate(returns)]
    return out


Curve = list[tuple[int, float]]


def _adapt_and_sample(
    policy: Policy, dist: TaskDistribution, tasks: list[TaskParams], steps: int, episodes: int,
    horizon: int, s: PolicySettings, gen: torch.Generator, seed: int, meta_gradient: bool,
) -> tuple[Params | None, PGBatch, list[float]]:  # fmt: skip
    """Episodes with theta_0, ..., theta_steps, each theta_{k+1} adapted on theta_k's episodes.

    Args:
        meta_gradient: keep the fast weights differentiable with respect to theta (second order
            unless ``s.first_order``); otherwise adapt first order and detach (evaluation).

    Returns:
        (fast weights theta_steps with a leading task dimension, None when steps = 0; the
        processed episodes of theta_steps; the average return after 0..steps inner steps).
    """
    env = make_batch_env(dist, tasks, episodes, seed)
    traj = rollout(policy, env, len(tasks), horizon, gen)
    fast: Params | None = None
    returns = [traj.average_return()]
    for _ in range(steps):
        fast = adapt(policy, [process(traj, s.gamma)], s.inner_lr, weights=fast, per_task=fast is not None,
                     first_order=s.first_order or not meta_gradient, estimator=s.estimator)  # fmt: skip
        if not meta_gradient:
            fast = OrderedDict((k, v.detach()) for k, v in fast.items())
        traj = rollout(policy, env, len(tasks), horizon, gen, weights=fast, per_task=True)
        returns.append(traj.average_return())
    return fast, process(traj, s.gamma), returns


def _train_maml(policy: Policy, dist: TaskDistribution, s: PolicySettings, horizon: int,
                rng: np.random.Generator, gen: torch.Generator) -> Curve:  # fmt: skip
    optimizer = torch.optim.Adam(policy.parameters(), lr=s.outer_lr)
    curve = []
    for it in range(s.meta_iterations):
        tasks = dist.sample(s.meta_batch, rng)
        seed = int(rng.integers(2**31 - 1))
        fast, post, returns = _adapt_and_sample(policy, dist, tasks, s.inner_steps, s.episodes_per_task,
                                                horizon, s, gen, seed, meta_gradient=True)  # fmt: skip
        assert fast is not None  # inner_steps >= 1
        loss = post_loss(policy, fast, post)  # the meta-loss, through the kept inner steps
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % s.log_every == 0 or it == s.meta_iterations - 1:
            curve.append((it, returns[-1]))
    return curve


def _pretrain(policy: Policy, dist: TaskDistribution, s: PolicySettings, horizon: int,
              rng: np.random.Generator, gen: torch.Generator) -> Curve:  # fmt: skip
    """Joint REINFORCE on the training tasks: as many updates and episodes as MAML, no inner loop."""
    optimizer = torch.optim.Adam(policy.parameters(), lr=s.outer_lr)
    curve = []
    episodes = s.episodes_per_task * (s.inner_steps + 1)
    for it in range(s.meta_iterations):
        tasks = dist.sample(s.meta_batch, rng)
        env = make_batch_env(dist, tasks, episodes, int(rng.integers(2**31 - 1)))
        traj = rollout(policy, env, len(tasks), horizon, gen)
        loss = meta_loss(policy, [], process(traj, s.gamma), s.inner_lr, estimator=s.estimator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % s.log_every == 0 or it == s.meta_iterations - 1:
            curve.append((it, traj.average_return()))
    return curve


def evaluate(
    policy: Policy, dist: TaskDistribution, tasks: list[TaskParams], s: PolicySettings, horizon: int,
    gen: torch.Generator, seed: int,
) -> list[float]:  # fmt: skip
    """Average return over ``tasks`` after k = 0..eval_inner_steps inner steps (the policy is unchanged)."""
    _, _, returns = _adapt_and_sample(policy, dist, tasks, s.eval_inner_steps, s.test_episodes, horizon, s, gen,
                                      seed, meta_gradient=False)  # fmt: skip
    return returns
