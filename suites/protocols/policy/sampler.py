"""Sample episodes of K tasks x N rows with a policy, shared weights or one set per task.

Every row is one episode from a fresh policy state (a recurrent policy resets at the episode
start) run for ``horizon`` steps in step mode with its state carried; a row whose episode ends
earlier is masked from then on. With per-task (fast) weights, the K tasks step together under
``torch.func.vmap`` of ``functional_call``, one set of weights per task: by definition one vmapped
call per step (``reference=True``), in practice one vmap level and one weight swap held for the
whole episode (``_per_task_steps``, equal to the last bit and about 1 ms a step cheaper).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import Tensor
from torch._C._functorch import _add_batch_dim, _remove_batch_dim
from torch._functorch.vmap import vmap_increment_nesting
from torch.func import functional_call, vmap
from torch.nn.utils.stateless import _reparametrize_module
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


_Steps = tuple[Callable[[Tensor], Tensor], Callable[[], AbstractContextManager[object]]]
"""(step, outside_model): ``step(obs (K * N, d)) -> out (K * N, P)`` carries the policy state; the
sampling and env code between steps runs inside ``outside_model()``."""


@contextlib.contextmanager
def _shared_steps(
    policy: Policy, weights: Mapping[str, Tensor] | None, rows: int, tie: bool
) -> Iterator[_Steps]:
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

    yield step, contextlib.nullcontext


@contextlib.contextmanager
def _per_task_steps_reference(
    policy: Policy, weights: Mapping[str, Tensor], num_tasks: int, n: int, tie: bool
) -> Iterator[_Steps]:
    """Steps with one set of weights per task: ``vmap`` of ``functional_call`` every step.

    The definition ``_per_task_steps`` is tested against (``rollout(..., reference=True)``).
    """
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

    yield step, contextlib.nullcontext


@contextlib.contextmanager
def _per_task_steps(
    policy: Policy, weights: Mapping[str, Tensor], num_tasks: int, n: int, tie: bool
) -> Iterator[_Steps]:
    """As ``_per_task_steps_reference``, with one vmap level and one weight swap for the whole episode.

    ``vmap(functional_call)`` every step walks the weights' and the state's pytrees and swaps every
    parameter into the module and back, about 1 ms a step on one CPU thread: as much as a small
    model's step itself. Here the weights are batched and swapped in once; the state stays batched
    at this level between steps, and each step only wraps the observations and unwraps the output,
    running the same batched kernels (equal to the reference to the last bit, tested). Everything
    outside the model (sampling, the env) runs inside the second context, where functorch is off:
    plain tensors, and random draws as outside vmap.
    """
    state0 = _expand(policy.init_state(n), num_tasks)
    with vmap_increment_nesting(num_tasks, "error") as level:
        batched = {name: _add_batch_dim(w, 0, level) for name, w in weights.items()}
        state = tree_map(lambda t: _add_batch_dim(t, 0, level), state0)
        with _reparametrize_module(policy, batched, tie_weights=tie):

            def step(obs: Tensor) -> Tensor:
                nonlocal state
                out, state = policy(_add_batch_dim(obs.view(num_tasks, n, -1), 0, level), state)
                return _remove_batch_dim(out, level, num_tasks, 0).reshape(num_tasks * n, -1)

            yield step, torch._C._DisableFuncTorch


@torch.no_grad()
def rollout(
    policy: Policy,
    env: VectorTaskEnv,
    num_tasks: int,
    horizon: int,
    generator: torch.Generator,
    weights: Mapping[str, Tensor] | None = None,
    per_task: bool = False,
    reference: bool = False,
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
        reference: step per-task weights with ``vmap`` of ``functional_call`` every step (the
            reference the default path equals; slower).

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
        steps = _shared_steps(policy, weights, rows, tie)
    elif weights is None:
        raise ValueError("rollout: per_task=True expected per-task weights, got weights=None")
    elif reference:
        steps = _per_task_steps_reference(policy, weights, num_tasks, n, tie)
    else:
        steps = _per_task_steps(policy, weights, num_tasks, n, tie)
    discrete = isinstance(policy, CategoricalPolicy)
    obs_np = env.reset()
    obs_rows, act_rows, rew_rows, mask_rows = [], [], [], []
    running = np.ones(rows, dtype=bool)
    with steps as (step, outside_model):
        for _ in range(horizon):
            obs = torch.from_numpy(obs_np)  # (K * N, obs_dim)
            out = step(obs)
            with outside_model():
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
