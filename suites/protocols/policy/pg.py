"""Policy-gradient losses and the MAML-RL inner and outer loop over a batch of tasks.

For task i with episodes sampled by pi_theta, the inner step is one policy-gradient step on the
surrogate (Finn et al. 2017, Algorithm 3, with the REINFORCE gradient of Williams 1992):

    L_i(theta) = -1/|valid| sum_{n,t} w_t(theta) A_{n,t},   theta_i' = theta - alpha grad L_i(theta)

with A the normalised advantage (return-to-go minus the task's linear feature baseline) and the
per-step weight w_t either

- ``"reinforce"``: log pi_theta(a_t | h_t), the surrogate of the MAML-RL code; its second
  derivative keeps only the grad^2 log pi term, so the meta-gradient ignores how the pre-update
  episodes' distribution depends on theta;
- ``"lvc"``: pi_theta(a_t | h_t) / stop_grad(pi_theta(a_t | h_t)), ProMP's low-variance
  curvature estimator (Rothfuss et al. 2019, eq. 9-10): the same first derivative, and a second
  derivative grad^2 log pi + grad log pi grad log pi^T, which accounts for that dependence
  per step (with lower variance than the full DiCE estimator).

The outer objective is the REINFORCE surrogate of the episodes the adapted policy pi_theta_i'
samples, averaged over tasks; its gradient flows through theta_i' into theta (second order, with
create_graph through the inner gradient under ``torch.func.grad``) or only through the identity
part of theta_i' (``first_order``, FOMAML). Several inner steps chain: step k uses the episodes
sampled with the weights after step k - 1. A batch's K tasks run together under
``torch.func.vmap``; histories (h_t) come from the policy's sequence mode from a fresh state,
equal to the step mode that sampled them.

References:
    Finn, Abbeel, Levine (2017), Model-Agnostic Meta-Learning, ICML (section 3.2, Algorithm 3).
    Williams (1992), Simple statistical gradient-following algorithms (REINFORCE).
    Rothfuss, Lee, Clavera, Asfour, Abbeel (2019), ProMP: Proximal Meta-Policy Search, ICLR.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from meta.functional import Params, sgd_update
from suites.protocols.policy import baseline
from suites.protocols.policy.policies import Policy
from suites.protocols.policy.returns import discounted_returns, normalize_advantages
from suites.protocols.policy.sampler import Trajectories

ESTIMATORS = ("reinforce", "lvc")


@dataclasses.dataclass(frozen=True)
class PGBatch:
    """Episodes ready for a policy-gradient loss, K tasks x N episodes x T steps.

    Attributes:
        obs: (K, N, T, obs_dim).
        actions: (K, N, T, act_dim) or (K, N, T) int.
        advantages: normalised advantages, 0 at masked steps, (K, N, T).
        mask: 1.0 at valid steps, (K, N, T).
    """

    obs: Tensor
    actions: Tensor
    advantages: Tensor
    mask: Tensor

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.obs, self.actions, self.advantages, self.mask


def process(traj: Trajectories, gamma: float) -> PGBatch:
    """Advantages A = R - b with the per-task linear baseline, normalised per task."""
    returns = discounted_returns(traj.rewards, traj.mask, gamma)
    values = baseline.fit_predict(traj.obs, returns, traj.mask)
    adv = normalize_advantages(returns - values, traj.mask)
    return PGBatch(traj.obs, traj.actions, adv, traj.mask)


def surrogate(
    policy: Policy,
    weights: Mapping[str, Tensor],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    state: object,
    estimator: str = "reinforce",
) -> Tensor:
    """One task's policy-gradient surrogate -mean_valid(w_t A_t) (see the module docstring).

    Args:
        policy: the policy whose ``functional_call`` gives the distribution parameters.
        weights: parameters by name.
        data: (obs (N, T, d), actions, advantages (N, T), mask (N, T)) of one task.
        state: the policy's fresh state for N rows.
        estimator: ``"reinforce"`` or ``"lvc"``.

    Returns:
        A scalar whose gradient is the REINFORCE estimate of -grad J.
    """
    obs, actions, adv, mask = data
    out, _ = functional_call(policy, dict(weights), (obs, state))  # (N, T, P)
    logp = policy.log_prob(out, actions)  # (N, T)
    weight = torch.exp(logp - logp.detach()) if estimator == "lvc" else logp
    return -(weight * adv * mask).sum() / mask.sum().clamp(min=1.0)


def _adapt_task(
    policy: Policy,
    weights: Params,
    stages: Sequence[tuple[Tensor, Tensor, Tensor, Tensor]],
    state: object,
    lr: float,
    first_order: bool,
    estimator: str,
) -> Params:
    """theta_{k+1} = theta_k - alpha grad L(theta_k; stage k), for each stage in turn."""
    for data in stages:
        grad_fn = torch.func.grad(lambda w, d=data: surrogate(policy, w, d, state, estimator))
        if first_order:
            grads = grad_fn(OrderedDict((k, v.detach()) for k, v in weights.items()))
            grads = OrderedDict((k, g.detach()) for k, g in grads.items())
        else:
            grads = grad_fn(weights)
        weights = sgd_update(weights, grads, lr)
    return weights


def _task_states(policy: Policy, k: int, n: int) -> object:
    """K copies of a fresh state for N rows, (K, N, ...) per leaf (one per vmapped task)."""
    return tree_map(lambda t: t.unsqueeze(0).expand(k, *t.shape).clone(), policy.init_state(n))


def _check(stages: Sequence[PGBatch], estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {list(ESTIMATORS)}, got {estimator!r}")
    for i, b in enumerate(stages):
        if b.obs.shape[:2] != stages[0].obs.shape[:2]:
            raise ValueError(
                f"stages[{i}].obs: expected (K, N) = {tuple(stages[0].obs.shape[:2])} like stage 0, "
                f"got {tuple(b.obs.shape[:2])}"
            )


def adapt(
    policy: Policy,
    stages: Sequence[PGBatch],
    lr: float,
    *,
    weights: Params | None = None,
    per_task: bool = False,
    first_order: bool = True,
    estimator: str = "reinforce",
) -> Params:
    """Per-task fast weights after one inner step per stage (stage k sampled with theta_k).

    The result stays differentiable with respect to the policy's parameters (second order unless
    ``first_order``), so a training loop can adapt once, sample with the detached fast weights,
    and backpropagate ``post_loss`` through the same fast weights.

    Args:
        policy: the policy; its parameters are theta_0 unless ``weights`` is given.
        stages: one PGBatch per inner step, all with the same K tasks.
        lr: alpha.
        weights: the weights to start from by name; default the policy's parameters.
        per_task: ``weights`` has a leading task dimension K (fast weights of an earlier step).
        first_order: no graph through the inner gradients (the default, for sampling and
            evaluation, where no meta-gradient is needed).
        estimator: the inner surrogate (``"reinforce"`` or ``"lvc"``; same first derivative).

    Returns:
        Fast weights by name with a leading task dimension K.
    """
    _check(stages, estimator)
    k, n = stages[0].obs.shape[:2]
    if per_task and weights is None:
        raise ValueError("adapt: per_task=True expected per-task weights, got weights=None")
    theta: Params = OrderedDict(policy.named_parameters()) if weights is None else weights
    batched = vmap(lambda w, st, s: _adapt_task(policy, w, st, s, lr, first_order, estimator),
                   in_dims=(0 if per_task else None, 0, 0), randomness="different")  # fmt: skip
    return batched(theta, [b.as_tuple() for b in stages], _task_states(policy, k, n))


def post_loss(policy: Policy, fast: Params, post: PGBatch) -> Tensor:
    """Mean over tasks of the REINFORCE surrogate of ``post`` at per-task weights ``fast``.

    With ``fast`` from ``adapt`` (graph kept), its gradient is the meta-gradient of
    ``meta_loss`` for the same episodes, without recomputing the inner steps.
    """
    k, n = post.obs.shape[:2]
    losses = vmap(lambda w, d, s: surrogate(policy, w, d, s), in_dims=(0, 0, 0), randomness="different")(
        fast, post.as_tuple(), _task_states(policy, k, n)
    )
    return losses.mean()


def meta_loss(
    policy: Policy,
    stages: Sequence[PGBatch],
    post: PGBatch,
    lr: float,
    *,
    first_order: bool = False,
    estimator: str = "lvc",
) -> Tensor:
    """Mean over tasks of the outer surrogate at the adapted weights (MAML-RL's objective).

    Args:
        policy: the policy; its parameters are theta.
        stages: the inner steps' episodes (empty: the plain REINFORCE loss of ``post`` at theta,
            the joint-training loss of the pretrain baseline).
        post: episodes sampled by the adapted policies, (K, N, T, ...).
        lr: alpha.
        first_order: drop the second derivatives through the inner steps.
        estimator: the inner surrogate's curvature estimator.

    Returns:
        A scalar; its gradient with respect to the policy's parameters is the meta-gradient.
    """
    _check([*stages, post], estimator)
    k, n = post.obs.shape[:2]
    theta: Params = OrderedDict(policy.named_parameters())

    def task_loss(w: Params, st: list[tuple[Tensor, ...]], data: tuple[Tensor, ...], s: object) -> Tensor:
        fast = _adapt_task(policy, w, st, s, lr, first_order, estimator)  # type: ignore[arg-type]
        return surrogate(policy, fast, data, s)  # type: ignore[arg-type]

    losses = vmap(task_loss, in_dims=(None, 0, 0, 0), randomness="different")(
        theta, [b.as_tuple() for b in stages], post.as_tuple(), _task_states(policy, k, n)
    )
    return losses.mean()
