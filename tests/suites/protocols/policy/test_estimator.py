"""The REINFORCE surrogate's gradient against analytic policy gradients on one-step problems."""

import math

import numpy as np
import torch
from gymnasium import spaces

from suites.protocols.policy import make_policy, surrogate

SAMPLES = 50_000


def _one_step(policy, obs_dim: int, generator: torch.Generator):
    """A batch of SAMPLES one-step episodes from one fixed observation: (obs, out, actions)."""
    obs = torch.full((SAMPLES, 1, obs_dim), 0.3)
    with torch.no_grad():
        out, _ = policy(obs, policy.init_state(SAMPLES))
        actions = policy.sample(out, generator)
    return obs, actions


def _estimate(policy, obs, actions, reward, estimator="reinforce"):
    adv = (reward - reward.mean()).view(SAMPLES, 1)  # a constant baseline keeps it unbiased
    data = (obs, actions, adv, torch.ones(SAMPLES, 1))
    loss = surrogate(policy, dict(policy.named_parameters()), data, policy.init_state(SAMPLES), estimator)
    return torch.autograd.grad(loss, list(policy.parameters()))


def _relative_error(estimate, exact) -> float:
    """||estimate - exact|| / ||exact|| over all parameters' gradients, flattened."""
    flat_est = torch.cat([g.flatten() for g in estimate])
    flat_exact = torch.cat([g.flatten() for g in exact])
    return float((flat_est - flat_exact).norm() / flat_exact.norm())


def test_gaussian_policy_gradient_matches_the_analytic_gradient():
    """J = E[-||a - g||^2] = -||mu - g||^2 - sum sigma^2; -grad(surrogate) must estimate grad J."""
    torch.manual_seed(0)
    policy = make_policy("mlp", 3, spaces.Box(-1, 1, (2,)), hidden_dim=8, init_std=0.5)
    goal = torch.tensor([0.7, -0.4])
    obs, actions = _one_step(policy, 3, torch.Generator().manual_seed(1))
    reward = -((actions - goal) ** 2).sum(-1)
    for estimator in ("reinforce", "lvc"):
        estimate = [-g for g in _estimate(policy, obs, actions, reward, estimator)]
        out, _ = policy(obs[:1], policy.init_state(1))
        mean, log_std = out[0, 0].split(2)
        exact_j = -((mean - goal) ** 2).sum() - torch.exp(2 * log_std).sum()
        exact = torch.autograd.grad(exact_j, list(policy.parameters()))
        assert _relative_error(estimate, exact) < 0.03, estimator


def test_gaussian_log_std_gradient_by_hand():
    torch.manual_seed(0)
    policy = make_policy("mlp", 3, spaces.Box(-1, 1, (2,)), hidden_dim=8, init_std=0.5)
    obs, actions = _one_step(policy, 3, torch.Generator().manual_seed(2))
    reward = -(actions**2).sum(-1)
    grads = dict(zip([n for n, _ in policy.named_parameters()], _estimate(policy, obs, actions, reward), strict=True))
    # dJ/dlog_sigma_i = -2 sigma_i^2 = -0.5, so the surrogate's gradient is +0.5
    assert torch.allclose(grads["log_std"], torch.full((2,), 0.5), atol=0.02)


def test_categorical_policy_gradient_matches_the_analytic_gradient():
    """Bandit: J = sum_i p_i r_i, dJ/dz_i = p_i (r_i - J) through the logits z."""
    torch.manual_seed(0)
    policy = make_policy("mlp", 3, spaces.Discrete(4), hidden_dim=8)
    rewards = torch.tensor([1.0, -0.5, 2.0, 0.0])
    obs, actions = _one_step(policy, 3, torch.Generator().manual_seed(3))
    estimate = [-g for g in _estimate(policy, obs, actions, rewards[actions[:, 0]])]
    out, _ = policy(obs[:1], policy.init_state(1))
    exact_j = (torch.softmax(out[0, 0], -1) * rewards).sum()
    exact = torch.autograd.grad(exact_j, list(policy.parameters()))
    assert _relative_error(estimate, exact) < 0.03


def test_categorical_samples_follow_the_softmax():
    policy = make_policy("mlp", 2, spaces.Discrete(3), hidden_dim=4)
    logits = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]]).expand(SAMPLES, 3)
    draws = policy.sample(logits, torch.Generator().manual_seed(0))
    freq = np.bincount(draws.numpy(), minlength=3) / SAMPLES
    assert np.allclose(freq, [0.125, 0.25, 0.625], atol=0.005)
    assert torch.allclose(policy.log_prob(logits[:1], torch.tensor([2])), torch.tensor([math.log(0.625)]))
