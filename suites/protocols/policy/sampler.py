"""Sample episodes of K tasks x N rows with a policy, shared weights or one set per task.

Every row is one episode from a fresh policy state (a recurrent policy resets at the episode
start) run for ``horizon`` steps in step mode with its state carried; a row whose episode ends
earlier is masked from then on. With per-task (fast) weights, the K tasks step together: each step
is one ``torch.func.vmap`` of ``functional_call`` over the tasks, one set of weights and one slice
of the policy state per task: the K tasks run as one batch through the public ``torch.func`` API.
Action sampling and the env run outside ``vmap``, on plain (K * N)-row tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from suites.protocols.policy.policies import CategoricalPolicy, Policy
from suites.tasks.base import VectorTaskEnv


@dataclasses.dataclass(frozen=True)
class Trajectories:
    """Episodes of K tasks, N per task, T steps each.

    Attributes:
        obs: observations before each step, (K, N, T, obs_dim) float32.
        actions: actions taken, (K, N, T, act_dim) float32 or (K, N, T) int64.
        rewards: rewards, (K, N, T) float32 (0 once the episode has ended).
        mask: 1.0 for steps of the running episode (the step that ends it included), (K, N, T).
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor

    @property
    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode, (K, N)."""
        return (self.rewards * self.mask).sum(-1)

    def average_return(self) -> float:
        """Mean undiscounted episode return over all K * N episodes."""
        return float(self.episode_returns.mean())


def _shares_tensors(module: torch.nn.Module) -> bool:
    """Whether two names of ``module`` refer to one parameter or buffer (tied weights)."""
    seen: set[int] = set()
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for _, t in named:
        if id(t) in seen:
            return True
        seen.add(id(t))
    return False


def _expand(state: object, k: int) -> object:
    """A state with a leading task dimension: K copies, (K, N, ...) per leaf."""
    return tree_map(lambda t: t.unsqueeze(0).expand(k, *t.shape).clone(), state)


_Step = Callable[[Tensor], Tensor]
"""``step(obs (K * N, d)) -> out (K * N, P)``: one policy step of every row, the state carried."""


def _shared_step(policy: Policy, weights: Mapping[str, Tensor] | None, rows: int, tie: bool) -> _Step:
    """Steps of one set of weights for all rows (the policy's own, or ``weights``)."""
    state = policy.init_state(rows)
    params = None if weights is None else dict(weights)

    def step(obs: Tensor) -> Tensor:
        nonlocal state
        if params is None:
            out, state = policy(obs, state)  # the module's own parameters: no functional_call overhead
        else:
            out, state = functional_call(policy, params, (obs, state), tie_weights=tie)
        return out

    return step


def _per_task_step(policy: Policy, weights: Mapping[str, Tensor], num_tasks: int, n: int, tie: bool) -> _Step:
    """Steps with one set of weights per task: ``vmap`` over the tasks of ``functional_call``."""
    params = dict(weights)

    def task_step(w: dict[str, Tensor], obs: Tensor, state: object) -> tuple[Tensor, object]:
        out, state = functional_call(policy, w, (obs, state), tie_weights=tie)
        return out, state

    batched_step = vmap(task_step, in_dims=(0, 0, 0))
    state = _expand(policy.init_state(n), num_tasks)

    def step(obs: Tensor) -> Tensor:
        nonlocal state
        out, state = batched_step(params, obs.view(num_tasks, n, -1), state)
        return out.reshape(num_tasks * n, -1)

    return step


@torch.no_grad()
def rollout(
    policy: Policy,
    env: VectorTaskEnv,
    num_tasks: int,
    horizon: int,
    generator: torch.Generator,
    weights: Mapping[str, Tensor] | None = None,
    per_task: bool = False,
) -> Trajectories:
    """Run one episode in every row of ``env`` (task-major rows, K = ``num_tasks``).

    Args:
        policy: a Gaussian or categorical policy.
        env: a batch env with K * N rows, row = task * N + j.
        num_tasks: K.
        horizon: steps per episode.
        generator: draws the action noise.
        weights: parameters by name (e.g. fast weights); None: the policy's own.
        per_task: ``weights`` has a leading K dimension, one set per task.

    Returns:
        ``Trajectories`` of shape (K, N, T, ...).
    """
    rows = env.num_envs
    if num_tasks < 1 or rows % num_tasks:
        raise ValueError(f"rollout: num_tasks expected a divisor of the env's {rows} rows, got {num_tasks}")
    n = rows // num_tasks
    # functional_call's untying pass (a walk over the module on every step) only matters when
    # names share a tensor; the zoo's models tie none, and then skipping it changes nothing
    tie = _shares_tensors(policy)
    if not per_task:
        step = _shared_step(policy, weights, rows, tie)
    elif weights is None:
        raise ValueError("rollout: per_task=True expected per-task weights, got weights=None")
    else:
        step = _per_task_step(policy, weights, num_tasks, n, tie)
    discrete = isinstance(policy, CategoricalPolicy)
    obs_np = env.reset()
    obs_rows, act_rows, rew_rows, mask_rows = [], [], [], []
    running = np.ones(rows, dtype=bool)
    for _ in range(horizon):
        obs = torch.from_numpy(obs_np)  # (K * N, obs_dim)
        out = step(obs)
        action = policy.sample(out, generator)
        obs_rows.append(obs)
        act_rows.append(action)
        mask_rows.append(torch.from_numpy(running.astype(np.float32)))
        obs_np, reward, done = env.step(action.numpy() if discrete else action.double().numpy())
        rew_rows.append(torch.from_numpy(np.where(running, reward, 0.0).astype(np.float32)))
        running = running & ~done
        if not running.any():
            break
    steps_taken = len(obs_rows)
    pad = horizon - steps_taken  # every row ended early: the rest is masked

    def stack(xs: list[Tensor]) -> Tensor:
        x = torch.stack(xs, dim=1)  # (K * N, T', ...)
        if pad:
            x = torch.cat([x, torch.zeros((rows, pad, *x.shape[2:]), dtype=x.dtype)], dim=1)
        return x.reshape(num_tasks, n, horizon, *x.shape[2:])

    return Trajectories(stack(obs_rows), stack(act_rows), stack(rew_rows), stack(mask_rows))
