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

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from models import SequenceModel, State
from suites.data import Normalizer

DynamicsFn = Callable[[Tensor, Tensor, State], tuple[Tensor, State]]
"""dynamics(obs (N, obs_dim), action (N, A), state) -> (next_obs (N, obs_dim), state)."""

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""reward(obs (..., obs_dim), action (..., A), next_obs (..., obs_dim)) -> (...), elementwise over the
leading dimensions (``imagined_returns`` scores all H steps of all N candidates in one call)."""


class ModelDynamics:
    """A zoo model as a dynamics function: next_obs = obs + unnormalise(model([obs, action])).

    With ``weights`` (e.g. MAML's fast weights) the model runs with those parameters in place of
    its own. They are written once, by ``load``, into a private copy of the model, so each imagined
    step is a plain forward; ``torch.func.functional_call`` would re-parametrise the model on every
    one of the planner's H x iterations steps, which costs as much as a small model's step itself.
    The copy runs the same operations on the same values, so its outputs are bitwise those of
    ``functional_call(model, weights, ...)``.

    Args:
        model: a zoo model with input obs_dim + A and output obs_dim.
        normalizer: the statistics the model was trained with.
        weights: parameters to run the model with by name; names left out keep the model's own
            values. None: the model itself.
    """

    def __init__(self, model: SequenceModel, normalizer: Normalizer, weights: Mapping[str, Tensor] | None = None):
        self.model = model
        self.normalizer = normalizer
        self.weights: dict[str, Tensor] | None = None
        self._copy: SequenceModel | None = None
        if weights is not None:
            self.load(weights)

    def load(self, weights: Mapping[str, Tensor]) -> None:
        """Run with ``weights`` from now on (values copied: later changes to the tensors are not seen).

        The model's other parameters and its buffers are copied as they are now; the copy
        follows the model's train / eval mode at each load. No gradient flows back to ``weights``
        (the copy's parameters are leaves).
        """
        own = dict(self.model.named_parameters())
        for name, value in weights.items():
            if name not in own:
                raise ValueError(f"ModelDynamics weights: expected parameter names of the model, got {name!r}")
            if value.shape != own[name].shape:
                raise ValueError(f"ModelDynamics weights[{name!r}]: expected shape {tuple(own[name].shape)}, got "
                                 f"{tuple(value.shape)}")  # fmt: skip
        if self._copy is None:
            self._copy = copy.deepcopy(self.model)
            for p in self._copy.parameters():
                p.grad = None
        with torch.no_grad():
            for name, p in self._copy.named_parameters():
                source = weights[name] if name in weights else own[name]
                p.copy_(source)
                # as functional_call would see them: some fused kernels (nn.GRU's) pick another
                # implementation, with other rounding, when a weight requires grad
                p.requires_grad_(source.requires_grad)
            for b, own_b in zip(self._copy.buffers(), self.model.buffers(), strict=True):
                b.copy_(own_b)
        self._copy.train(self.model.training)
        run_with = dict(self._copy.named_parameters())
        self.weights = {name: run_with[name] for name in weights}  # the values it runs with

    def predict(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The model's normalised output for normalised inputs, one step (B, D) or a sequence (B, T, D)."""
        net = self.model if self._copy is None else self._copy
        out: tuple[Tensor, State] = net(x, state)
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


@torch.inference_mode()  # lighter than no_grad (no version counters); only the scores leave
def imagined_returns(dynamics: DynamicsFn, reward: RewardFn, obs: Tensor, state: State, actions: Tensor) -> Tensor:
    """Predicted return of each candidate action sequence.

    Args:
        dynamics: the model of the environment.
        reward: the task's batched reward of a transition.
        obs: the current observation, (obs_dim,).
        state: the dynamics' state now, batch 1 (``()`` for stateless dynamics).
        actions: candidate sequences, (N, H, A).

    Returns:
        (N,): the sum over the H imagined steps of reward(obs_t, a_t, obs_{t+1}), the rewards of
        all steps computed in one call of ``reward`` after the rollout.
    """
    if obs.dim() != 1 or actions.dim() != 3:
        raise ValueError(f"imagined_returns: expected obs (obs_dim,) and actions (N, H, A), got "
                         f"{tuple(obs.shape)} and {tuple(actions.shape)}")  # fmt: skip
    n, h, _ = actions.shape
    o = obs.expand(n, obs.shape[0])  # (N, obs_dim)
    s = repeat_state(state, n)
    path = [o]
    for t in range(h):
        o, s = dynamics(o, actions[:, t], s)
        path.append(o)
    visited = torch.stack(path)  # (H + 1, N, obs_dim)
    rewards = reward(visited[:-1], actions.transpose(0, 1), visited[1:])  # (H, N): one call for every step
    total = obs.new_zeros(n)
    for t in range(h):  # summed step by step, in order, as the rewards arrive along the rollout
        total = total + rewards[t]
    return total
