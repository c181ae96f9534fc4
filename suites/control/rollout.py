"""Imagined rollouts: a dynamics function rolled forward over candidate action sequences.

A dynamics function maps (observations (N, obs_dim), actions (N, A), state) to (next observations,
state); ``ModelDynamics`` makes one of a zoo model trained on normalised [observation, action]
inputs and normalised observation-change targets. ``imagined_returns`` rolls it over H steps with
the N candidates as the batch, starting every candidate from the same current observation and the
same model state (the state the model carried along the real history), and sums the task's
batched reward of each predicted transition.

References:
    Nagabandi, Kahn, Fearing, Levine (2018): delta prediction, normalised, next = obs + delta.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call
from torch.utils._pytree import tree_map

from models import SequenceModel, State
from suites.data import Normalizer

DynamicsFn = Callable[[Tensor, Tensor, State], tuple[Tensor, State]]
"""dynamics(obs (N, obs_dim), action (N, A), state) -> (next_obs (N, obs_dim), state)."""

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""reward(obs (N, obs_dim), action (N, A), next_obs (N, obs_dim)) -> (N,)."""


class ModelDynamics:
    """A zoo model as a dynamics function: next_obs = obs + unnormalise(model([obs, action])).

    Args:
        model: a zoo model with input obs_dim + A and output obs_dim.
        normalizer: the statistics the model was trained with.
        weights: parameters to run the model with (e.g. MAML's fast weights); None: its own.
    """

    def __init__(self, model: SequenceModel, normalizer: Normalizer, weights: Mapping[str, Tensor] | None = None):
        self.model = model
        self.normalizer = normalizer
        self.weights = None if weights is None else dict(weights)

    def predict(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The model's normalised output for normalised inputs, one step (B, D) or a sequence (B, T, D)."""
        if self.weights is None:
            return self.model(x, state)
        out: tuple[Tensor, State] = functional_call(self.model, self.weights, (x, state))
        return out

    def inputs(self, obs: Tensor, action: Tensor) -> Tensor:
        """Normalised model inputs [obs, action], (..., obs_dim + A)."""
        return self.normalizer.apply_inputs(torch.cat([obs, action], dim=-1))

    def __call__(self, obs: Tensor, action: Tensor, state: State) -> tuple[Tensor, State]:
        delta, state = self.predict(self.inputs(obs, action), state)
        return obs + self.normalizer.unapply_targets(delta), state


def repeat_state(state: State, n: int) -> State:
    """A batch-1 state repeated to n rows (every state tensor has the batch first)."""

    def rep(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        if t.shape[0] != 1:
            raise ValueError(f"state: expected batch 1 to repeat for the candidates, got a tensor of shape "
                             f"{tuple(t.shape)}")  # fmt: skip
        return t.expand(n, *t.shape[1:]).contiguous()

    return tree_map(rep, state)


@torch.no_grad()
def imagined_returns(dynamics: DynamicsFn, reward: RewardFn, obs: Tensor, state: State, actions: Tensor) -> Tensor:
    """Predicted return of each candidate action sequence.

    Args:
        dynamics: the model of the environment.
        reward: the task's batched reward of a transition.
        obs: the current observation, (obs_dim,).
        state: the dynamics' state now, batch 1 (``()`` for stateless dynamics).
        actions: candidate sequences, (N, H, A).

    Returns:
        (N,): the sum over the H imagined steps of reward(obs_t, a_t, obs_{t+1}).
    """
    if obs.dim() != 1 or actions.dim() != 3:
        raise ValueError(f"imagined_returns: expected obs (obs_dim,) and actions (N, H, A), got "
                         f"{tuple(obs.shape)} and {tuple(actions.shape)}")  # fmt: skip
    n, h, _ = actions.shape
    o = obs.expand(n, obs.shape[0])  # (N, obs_dim)
    s = repeat_state(state, n)
    total = obs.new_zeros(n)
    for t in range(h):
        nxt, s = dynamics(o, actions[:, t], s)
        total = total + reward(o, actions[:, t], nxt)
        o = nxt
    return total
