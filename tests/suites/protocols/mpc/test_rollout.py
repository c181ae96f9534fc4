"""Imagined rollouts: rewards summed along the dynamics, model deltas un-normalised, state carried."""

from __future__ import annotations

import re

import pytest
import torch
from torch.func import functional_call
from torch.utils._pytree import tree_leaves

from models import make_model
from suites.data import Normalizer
from suites.protocols.mpc import ModelDynamics, imagined_returns, repeat_state
from suites.tasks import get_distribution
from tests.suites.protocols.mpc.true_pendulum import pendulum_step

PENDULUM = get_distribution("pendulum-mass-length")


def normalizer(obs_dim: int = 3, act_dim: int = 1) -> Normalizer:
    g = torch.Generator().manual_seed(0)
    d = obs_dim + act_dim
    return Normalizer(torch.randn(d, generator=g), 1 + torch.rand(d, generator=g),
                      torch.randn(obs_dim, generator=g), 1 + torch.rand(obs_dim, generator=g))  # fmt: skip


def test_imagined_returns_sum_the_reward_along_the_true_dynamics() -> None:
    task = PENDULUM.params(mass=1.3, length=0.8)
    obs = torch.tensor([0.6, 0.8, -1.5])
    actions = 4 * torch.rand(16, 7, 1, generator=torch.Generator().manual_seed(1)) - 2
    got = imagined_returns(lambda o, a, s: (pendulum_step(o, a, 1.3, 0.8), ()),
                           lambda o, a, n: PENDULUM.reward(o, a, n, task), obs, (), actions)  # fmt: skip
    for i in range(16):  # one candidate at a time, by hand
        o, total = obs[None], 0.0
        for t in range(7):
            n = pendulum_step(o, actions[i, t][None], 1.3, 0.8)
            total += float(PENDULUM.reward(o, actions[i, t][None], n, task))
            o = n
        assert float(got[i]) == pytest.approx(total, rel=1e-5)


def test_model_dynamics_adds_the_unnormalised_delta() -> None:
    torch.manual_seed(0)
    model = make_model("mlp", 4, 3, hidden_dim=16)
    norm = normalizer()
    obs, action = torch.randn(5, 3), torch.randn(5, 1)
    next_obs, state = ModelDynamics(model, norm)(obs, action, ())
    x = (torch.cat([obs, action], -1) - norm.input_mean) / norm.input_std
    delta = model(x, ())[0] * norm.target_std + norm.target_mean
    assert torch.allclose(next_obs, obs + delta, atol=1e-6)
    assert state == ()


def test_model_dynamics_runs_given_weights() -> None:
    torch.manual_seed(0)
    model = make_model("mlp", 4, 3, hidden_dim=16)
    other = make_model("mlp", 4, 3, hidden_dim=16)
    obs, action = torch.randn(5, 3), torch.randn(5, 1)
    with_weights = ModelDynamics(model, normalizer(), dict(other.named_parameters()))(obs, action, ())[0]
    assert torch.allclose(with_weights, ModelDynamics(other, normalizer())(obs, action, ())[0])
    assert not torch.allclose(with_weights, ModelDynamics(model, normalizer())(obs, action, ())[0])


@pytest.mark.parametrize("name", ["gru", "ssm", "transformer"])
def test_loaded_weights_give_functional_call_outputs_bitwise(name: str) -> None:
    """The model copy holding the weights computes exactly what functional_call computes, step and
    sequence mode; a second load replaces the first; names left out keep the model's own values."""
    torch.manual_seed(0)
    model = make_model(name, 4, 3, hidden_dim=16).eval()
    own = dict(model.named_parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = {k: v.detach() + 0.1 * torch.randn_like(v) for k, v in own.items()}
    second = {k: v + 0.1 * torch.randn_like(v) for k, v in first.items()}
    partial = {k: second[k] for k in list(own)[:2]}
    x, seq = torch.randn(5, 4), torch.randn(5, 7, 4)
    dyn = ModelDynamics(model, normalizer(), first)
    for weights in (first, second, partial):
        dyn.load(weights)
        with torch.no_grad():
            for inputs in (x, seq):
                got, got_state = dyn.predict(inputs, model.init_state(5))
                want, want_state = functional_call(model, weights, (inputs, model.init_state(5)))
                assert torch.equal(got, want)
                pairs = zip(tree_leaves(got_state), tree_leaves(want_state), strict=True)
                assert all(torch.equal(a, b) for a, b in pairs)
    assert set(dyn.weights or {}) == set(partial)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model itself untouched


def test_model_dynamics_weights_errors_name_the_parameter() -> None:
    model = make_model("mlp", 4, 3, hidden_dim=16)
    name, value = next(iter(model.named_parameters()))
    with pytest.raises(ValueError, match=r"weights: expected parameter names of the model, got 'nope'"):
        ModelDynamics(model, normalizer(), {"nope": value})
    with pytest.raises(ValueError, match=re.escape(f"weights[{name!r}]: expected shape {tuple(value.shape)}, got")):
        ModelDynamics(model, normalizer(), {name: value[:1]})


@pytest.mark.parametrize("name", ["gru", "ssm"])
def test_imagined_returns_equal_the_step_by_step_reward_sum_bitwise(name: str) -> None:
    """Scoring all H steps with one reward call after the rollout changes nothing: the returns equal
    those of a loop that calls the reward at each step and adds it at once."""
    torch.manual_seed(0)
    model = make_model(name, 4, 3, hidden_dim=16).eval()
    dyn = ModelDynamics(model, normalizer())
    task = PENDULUM.params(mass=1.4, length=0.7)

    def reward(o, a, n):  # type: ignore[no-untyped-def]
        return PENDULUM.reward(o, a, n, task)

    with torch.no_grad():
        _, state = model(torch.randn(1, 9, 4), model.init_state(1))
        obs = torch.tensor([0.6, 0.8, -1.5])
        actions = 4 * torch.rand(48, 15, 1, generator=torch.Generator().manual_seed(3)) - 2
        o, s, total = obs.expand(48, 3), repeat_state(state, 48), torch.zeros(48)
        for t in range(15):
            nxt, s = dyn(o, actions[:, t], s)
            total = total + reward(o, actions[:, t], nxt)
            o = nxt
    assert torch.equal(imagined_returns(dyn, reward, obs, state, actions), total)


@pytest.mark.parametrize("name", ["gru", "ssm"])
def test_candidates_start_from_the_carried_state(name: str) -> None:
    """Each candidate's imagined return equals a batch-1 rollout from the same state, and the state
    matters (a fresh state gives other returns)."""
    torch.manual_seed(0)
    model = make_model(name, 4, 3, hidden_dim=16).eval()
    dyn = ModelDynamics(model, normalizer())
    task = PENDULUM.params(mass=1.0, length=1.0)

    def reward(o, a, n):  # type: ignore[no-untyped-def]
        return PENDULUM.reward(o, a, n, task)

    with torch.no_grad():
        _, state = model(torch.randn(1, 12, 4), model.init_state(1))  # a history of 12 steps
    obs = torch.tensor([1.0, 0.0, 0.5])
    actions = 4 * torch.rand(6, 5, 1, generator=torch.Generator().manual_seed(2)) - 2
    batched = imagined_returns(dyn, reward, obs, state, actions)
    one_by_one = torch.cat([imagined_returns(dyn, reward, obs, state, actions[i : i + 1]) for i in range(6)])
    assert torch.allclose(batched, one_by_one, atol=1e-4)
    fresh = imagined_returns(dyn, reward, obs, model.init_state(1), actions)
    assert (batched - fresh).abs().max() > 1e-3


def test_repeat_state_needs_batch_one() -> None:
    state = (torch.zeros(1, 4), (torch.ones(1, 2, 3),))
    repeated = repeat_state(state, 5)
    assert repeated[0].shape == (5, 4) and repeated[1][0].shape == (5, 2, 3)
    with pytest.raises(ValueError, match=r"state: expected batch 1 .* shape \(2, 4\)"):
        repeat_state((torch.zeros(2, 4),), 5)


def test_imagined_returns_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"expected obs \(obs_dim,\) and actions \(N, H, A\)"):
        imagined_returns(lambda o, a, s: (o, s), lambda o, a, n: o.sum(-1), torch.zeros(3), (), torch.zeros(4, 1))
