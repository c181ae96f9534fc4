"""Policies over a zoo model: a Gaussian head for Box actions, a categorical head for Discrete.

The zoo model maps observations to distribution parameters with its stateful interface, so a
recurrent model carries its state through an episode and starts each episode from a fresh state::

    policy = make_policy("gru", obs_dim=2, action_space=Box(-0.1, 0.1, (2,)), param_budget=20_000)
    state = policy.init_state(batch_size=8)
    out, state = policy(obs_t, state)                  # obs (B, obs_dim) -> out (B, P)
    actions = policy.sample(out, generator)            # (B, act_dim), or (B,) ints
    out, _ = policy(obs, policy.init_state(8))         # a whole episode (B, T, obs_dim)
    logp = policy.log_prob(out, actions)               # (B, T)

``out`` is a plain tensor (Gaussian: mean and log-std side by side; categorical: logits) and
``log_prob`` / ``sample`` are pure functions of it, so the policy runs under
``torch.func.functional_call`` with fast weights and under ``torch.func.vmap`` over tasks, as MAML
needs. The Gaussian's log-std is, as in MAML-RL (Finn et al. 2017, rllab's GaussianMLPPolicy), a
state-independent parameter adapted with the rest by default, or an output of the model.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces
from torch import Tensor, nn

from models import SequenceModel, State, make_model

LOG_2PI = math.log(2 * math.pi)


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian over Box actions; the model gives the mean (and the log-std if asked).

    Args:
        model: a zoo model with ``output_dim`` = act_dim, or 2 * act_dim when
            ``state_dependent_std``.
        act_dim: action dimensions.
        init_std: initial standard deviation (rllab's default 1.0).
        state_dependent_std: the model outputs the log-std too; else it is a learned parameter.

    Shapes:
        forward: obs (B, T, obs_dim) or (B, obs_dim) -> out (..., 2 * act_dim) = [mean, log_std].
    """

    def __init__(self, model: SequenceModel, act_dim: int, init_std: float = 1.0,
                 state_dependent_std: bool = False) -> None:  # fmt: skip
        super().__init__()
        expected = 2 * act_dim if state_dependent_std else act_dim
        if model.output_dim != expected:
            raise ValueError(f"GaussianPolicy: model.output_dim expected {expected}, got {model.output_dim}")
        if not init_std > 0:
            raise ValueError(f"GaussianPolicy: init_std expected a positive float, got {init_std!r}")
        self.model = model
        self.act_dim = act_dim
        self.state_dependent_std = state_dependent_std
        self.log_std = None if state_dependent_std else nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self._log_std_offset = math.log(init_std)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The model's fresh state for ``batch_size`` rows."""
        return self.model.init_state(batch_size, device)

    def forward(self, obs: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """Distribution parameters [mean, log_std] (..., 2 * act_dim) and the next state."""
        y, state = self.model(obs, state, reset)
        if self.state_dependent_std:
            mean, log_std = y.split(self.act_dim, dim=-1)
            log_std = log_std + self._log_std_offset
        else:
            mean, log_std = y, self.log_std.expand_as(y)  # type: ignore[union-attr]
        return torch.cat([mean, log_std], dim=-1), state

    def log_prob(self, out: Tensor, actions: Tensor) -> Tensor:
        """log N(a; mu, sigma^2) summed over action dimensions: (..., 2A), (..., A) -> (...)."""
        mean, log_std = out.split(self.act_dim, dim=-1)
        z = (actions - mean) * torch.exp(-log_std)
        return -(0.5 * z * z + log_std + 0.5 * LOG_2PI).sum(-1)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """mu + sigma * eps, eps ~ N(0, I): (..., 2A) -> (..., A)."""
        mean, log_std = out.split(self.act_dim, dim=-1)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + torch.exp(log_std) * eps

    def entropy(self, out: Tensor) -> Tensor:
        """Differential entropy sum(log sigma + 0.5 log(2 pi e)): (..., 2A) -> (...)."""
        _, log_std = out.split(self.act_dim, dim=-1)
        return (log_std + 0.5 * (LOG_2PI + 1.0)).sum(-1)


class CategoricalPolicy(nn.Module):
    """Categorical over ``n`` discrete actions; the model gives the logits.

    Shapes:
        forward: obs (B, T, obs_dim) or (B, obs_dim) -> logits (..., n); actions are int64 (...).
    """

    def __init__(self, model: SequenceModel, num_actions: int) -> None:
        super().__init__()
        if model.output_dim != num_actions:
            raise ValueError(f"CategoricalPolicy: model.output_dim expected {num_actions}, got {model.output_dim}")
        self.model = model
        self.num_actions = num_actions

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The model's fresh state for ``batch_size`` rows."""
        return self.model.init_state(batch_size, device)

    def forward(self, obs: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """Logits (..., n) and the next state."""
        return self.model(obs, state, reset)

    def log_prob(self, out: Tensor, actions: Tensor) -> Tensor:
        """log softmax(logits)[a]: (..., n), (...) int -> (...)."""
        return torch.log_softmax(out, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One action index per row (inverse-CDF with one uniform each): (..., n) -> (...)."""
        probs = torch.softmax(out, dim=-1)
        u = torch.rand((*out.shape[:-1], 1), generator=generator, dtype=out.dtype, device=out.device)
        index = (probs.cumsum(-1) < u).sum(-1)
        return index.clamp(max=self.num_actions - 1)

    def entropy(self, out: Tensor) -> Tensor:
        """-sum p log p: (..., n) -> (...)."""
        logp = torch.log_softmax(out, dim=-1)
        return -(logp.exp() * logp).sum(-1)


Policy = GaussianPolicy | CategoricalPolicy


def make_policy(
    model_name: str,
    obs_dim: int,
    action_space: spaces.Space,
    *,
    param_budget: int | None = None,
    hidden_dim: int | None = None,
    init_std: float = 1.0,
    state_dependent_std: bool = False,
) -> Policy:
    """A zoo model ``model_name`` wrapped in the head that fits ``action_space``.

    Args:
        model_name: a key of ``models.MODELS``.
        obs_dim: observation features per step (the model's input_dim).
        action_space: a Box of shape (d,) (Gaussian head) or a Discrete (categorical head).
        param_budget, hidden_dim: the model's size (see ``models.make_model``).
        init_std, state_dependent_std: Gaussian head settings (see ``GaussianPolicy``).

    Returns:
        A ``GaussianPolicy`` or ``CategoricalPolicy``.
    """
    if isinstance(action_space, spaces.Discrete):
        n = int(action_space.n)
        model = make_model(model_name, obs_dim, n, hidden_dim=hidden_dim, param_budget=param_budget)
        return CategoricalPolicy(model, n)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        act_dim = int(action_space.shape[0])
        out_dim = 2 * act_dim if state_dependent_std else act_dim
        model = make_model(model_name, obs_dim, out_dim, hidden_dim=hidden_dim, param_budget=param_budget)
        return GaussianPolicy(model, act_dim, init_std, state_dependent_std)
    raise ValueError(f"make_policy: action_space expected a Box of shape (d,) or a Discrete, got {action_space}")
