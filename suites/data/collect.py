"""Seeded rollouts of a behaviour policy over E episodes of each task.

A pool of E bare environments (no gymnasium wrappers) is built once per call and switched from
task to task with ``set_task``. Every path gives the same data (tests compare them bit for bit):

- a plugged-in policy: every step it sees the (E, obs_dim) batch of observations and returns
  (E, act_dim) actions, then each env steps in a plain loop (lockstep); a distribution with a
  vectorised env (``point-nav-2d``) steps all rows as one numpy computation instead;
- the default uniform random policy: its actions do not depend on observations, so they are
  drawn up front and each env runs its whole row alone (open loop), which skips per-step
  batching and keeps one simulation state in the cache; a distribution with a vectorised env
  steps all K tasks' E rows as one batch of K * E rows instead (``point-nav-2d``, whose step is
  so cheap that per-env Python overhead would dominate);
- ``reference=True``: the lockstep loop whatever the policy.

These loops step bare envs, without ``gymnasium.vector.SyncVectorEnv``'s wrappers, autoreset
bookkeeping and batching copies; ``python -m suites.data.throughput`` compares the two
(docs/performance.md).

An episode row lasts exactly ``horizon`` steps: an env that terminates earlier (an ant that
falls, a point that reaches its goal) is reset on the spot and ``starts`` marks the step where
the next episode begins. The seed determines every reset and every random action, so the same
seed gives bit-identical data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from gymnasium import Env, spaces

from suites.data.task_data import TaskData
from suites.tasks.base import TaskDistribution, VectorTaskEnv
from suites.tasks.spaces import TaskParams

BehaviourPolicy = Callable[[np.ndarray], np.ndarray]
"""policy(obs (n, obs_dim) float32) -> actions (n, act_dim), or (n,) ints for discrete actions."""


def _check_int(where: str, name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{where}: {name} expected an int >= {low}, got {value!r}")
    return int(value)


def _random_actions(space: spaces.Space, rng: np.random.Generator, horizon: int, n: int) -> np.ndarray:
    """Uniform random actions for ``horizon`` steps of ``n`` envs, drawn at once with ``rng``.

    Shapes:
        (horizon, n, act_dim) for a Box, (horizon, n) integers for Discrete.
    """
    if isinstance(space, spaces.Discrete):
        return rng.integers(space.n, size=(horizon, n)) + space.start
    if isinstance(space, spaces.Box):
        low, width = space.low.astype(np.float64), space.high.astype(np.float64) - space.low
        # low + width * U[0, 1): cheaper than rng.uniform with array bounds, the same distribution.
        return (low + width * rng.random((horizon, n, *low.shape))).astype(space.dtype)
    raise ValueError(f"collect: action space expected Box or Discrete, got {space}")


def _replay(actions: np.ndarray) -> BehaviourPolicy:
    """A policy that returns ``actions[t]`` on its t-th call, whatever it observes."""
    steps = iter(actions)
    return lambda obs: next(steps)


def _act_dim(space: spaces.Space) -> int:
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    raise ValueError(f"collect: action space expected Box (d,) or Discrete, got {space}")


def _encode(actions: np.ndarray, space: spaces.Space, n: int, where: str) -> np.ndarray:
    """A behaviour policy's output as (n, act_dim) floats (one-hot when discrete, clipped to the
    bounds of a Box); ValueError on a bad shape."""
    actions = np.asarray(actions)
    if isinstance(space, spaces.Discrete):
        if actions.shape != (n,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"{where}: policy expected {n} integer actions of shape ({n},), "
                f"got {actions.dtype} of shape {actions.shape}"
            )
        index = actions - space.start
        if index.min() < 0 or index.max() >= space.n:
            raise ValueError(
                f"{where}: policy actions expected in [{space.start}, {space.start + space.n - 1}], got {actions}"
            )
        return np.eye(space.n, dtype=np.float64)[index]
    expect = (n, *tuple(space.shape or ()))
    if actions.shape != expect:
        raise ValueError(f"{where}: policy expected actions of shape {expect}, got {actions.shape}")
    # the env acts on the clipped action, so the model's input is the clipped action too
    return np.clip(actions, space.low, space.high) if isinstance(space, spaces.Box) else actions


def _rollout(
    envs: Sequence[Env],
    horizon: int,
    seeds: np.ndarray,
    policy: BehaviourPolicy,
    switch: tuple[int, TaskParams] | None = None,
) -> tuple[np.ndarray, ...]:
    """Step ``envs`` together for ``horizon`` steps from resets seeded by ``seeds``.

    Returns:
        obs (E, T, obs_dim), actions (E, T, act_dim), next_obs (E, T, obs_dim), rewards (E, T),
        starts (E, T); arrays in float64 (bool for starts).
    """
    space = envs[0].action_space
    n = len(envs)
    discrete = isinstance(space, spaces.Discrete)
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
    obs_rows, act_rows, next_rows, rewards = [], [], [], []
    starts = np.zeros((horizon, n), dtype=bool)
    starts[0] = True
    # Python lists in the inner loop: an append costs a fraction of a numpy item assignment.
    for t in range(horizon):
        if switch is not None and t == switch[0]:
            for env in envs:
                env.unwrapped.set_task(switch[1])  # type: ignore[attr-defined]
        raw = np.asarray(policy(obs.astype(np.float32)))  # a copy: the policy may not alias it
        act_rows.append(_encode(raw, space, n, "collect"))
        obs_rows.append(obs)
        results = [env.step(int(a) if discrete else a) for env, a in zip(envs, raw, strict=True)]
        next_obs = [r[0] for r in results]
        rewards.append([r[1] for r in results])
        obs = np.array(next_obs)  # np.array of a list: a third of np.stack's cost here
        next_rows.append(obs)
        ended = [j for j, r in enumerate(results) if r[2] or r[3]]  # terminated or truncated
        if ended:  # a new episode starts in these rows
            obs = obs.copy()
            for j in ended:
                obs[j] = envs[j].reset()[0]
            if t + 1 < horizon:
                starts[t + 1, ended] = True
    out = (obs_rows, act_rows, next_rows, rewards)
    return (*(np.asarray(x, dtype=np.float64).swapaxes(0, 1) for x in out), starts.swapaxes(0, 1))


def _rollout_open_loop(
    envs: Sequence[Env], horizon: int, seeds: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, ...]:
    """As ``_rollout`` with actions fixed in advance (the random policy), one env at a time.

    Nothing needs the batch of observations, so each env runs its whole row alone: its
    simulation state stays in the cache and no per-step batching is paid. The data equal
    ``_rollout(envs, horizon, seeds, _replay(actions))`` exactly (tested).
    """
    space = envs[0].action_space
    discrete = isinstance(space, spaces.Discrete)
    n = len(envs)
    starts = np.zeros((horizon, n), dtype=bool)
    starts[0] = True
    obs_rows, next_rows, rewards = [], [], []
    for j, env in enumerate(envs):
        obs = env.reset(seed=int(seeds[j]))[0]
        o_row, n_row, r_row = [], [], []
        for t, a in enumerate(actions[:, j]):
            o, r, terminated, truncated, _ = env.step(int(a) if discrete else a)
            o_row.append(obs)
            n_row.append(o)
            r_row.append(r)
            if terminated or truncated:
                o = env.reset()[0]
                if t + 1 < horizon:
                    starts[t + 1, j] = True
            obs = o
        obs_rows.append(o_row)
        next_rows.append(n_row)
        rewards.append(r_row)
    encoded = np.eye(space.n)[actions - space.start] if discrete else actions  # type: ignore[attr-defined]
    return (
        np.asarray(obs_rows, dtype=np.float64),
        np.asarray(encoded, dtype=np.float64).swapaxes(0, 1),
        np.asarray(next_rows, dtype=np.float64),
        np.asarray(rewards, dtype=np.float64),
        starts.swapaxes(0, 1),
    )


def _rollout_vector(venv: VectorTaskEnv, horizon: int, policy: BehaviourPolicy) -> tuple[np.ndarray, ...]:
    """As ``_rollout``, through a distribution's vectorised env (its fast path)."""
    n = venv.num_envs
    obs = venv.reset()
    obs_rows, act_rows, next_rows, rewards = [], [], [], []
    starts = np.zeros((horizon, n), dtype=bool)
    starts[0] = True
    for t in range(horizon):
        raw = np.asarray(policy(obs.astype(np.float32)))  # a copy: the policy may not alias it
        act_rows.append(_encode(raw, venv.action_space, n, "collect"))
        obs_rows.append(obs)
        next_obs, reward, done = venv.step(raw)
        next_rows.append(next_obs)
        rewards.append(reward)
        obs = next_obs
        if done.any():
            obs = venv.reset_rows(done)
            if t + 1 < horizon:
                starts[t + 1] = done
    out = (obs_rows, act_rows, next_rows, rewards)
    return (*(np.asarray(x, dtype=np.float64).swapaxes(0, 1) for x in out), starts.swapaxes(0, 1))


def _to_task_data(
    dist: TaskDistribution,
    tasks: Sequence[TaskParams],
    parts: list[tuple[np.ndarray, ...]],
    switch: tuple[int, TaskParams] | None = None,
) -> TaskData:
    Ob, A, N, R, S = (np.stack(x) for x in zip(*parts, strict=True))  # each (K, E, T, ...)
    return TaskData(
        inputs=torch.from_numpy(np.concatenate([Ob, A], axis=-1).astype(np.float32)),
        targets=torch.from_numpy((N - Ob).astype(np.float32)),
        starts=torch.from_numpy(S),
        rewards=torch.from_numpy(R.astype(np.float32)),
        tasks=tuple(tasks),
        task_name=dist.name,
        obs_dim=Ob.shape[-1],
        act_dim=A.shape[-1],
        switch=switch,
    )


def collect(
    dist: TaskDistribution,
    tasks: Sequence[TaskParams],
    episodes: int,
    horizon: int,
    seed: int,
    policy: BehaviourPolicy | None = None,
    reference: bool = False,
) -> TaskData:
    """Roll out ``episodes`` episodes of ``horizon`` steps in every task of ``tasks``.

    Args:
        dist: the task distribution the tasks belong to.
        tasks: the K tasks (e.g. ``dist.sample(K, rng)`` or ``dist.test_tasks(K)``).
        episodes: E episodes per task, stepped together.
        horizon: T steps per episode row (terminated episodes are reset within the row).
        seed: seeds every reset and every random action; task k uses SeedSequence([seed, k]).
        policy: behaviour policy on an (E, obs_dim) float32 batch; uniform random if None.
        reference: step the envs in lockstep through the policy interface, the plain path.
            Otherwise a distribution's vectorised env is stepped when it has one (all tasks
            as one batch for the random policy, one task at a time for a plugged-in policy),
            and else the random policy runs each env's row alone (the same data, tested).

    Returns:
        TaskData with K tasks, E episodes, T steps.
    """
    where = f"collect({dist.name!r})"
    episodes = _check_int(where, "episodes", episodes, 1)
    horizon = _check_int(where, "horizon", horizon, 1)
    seed = _check_int(where, "seed", seed, 0)
    if len(tasks) == 0:
        raise ValueError(f"{where}: tasks expected at least one task, got none")
    checked = [dist.check(t) for t in tasks]
    if dist.vector_env is not None and not reference:
        if policy is None:
            return _collect_vector_random(dist, checked, episodes, horizon, seed)
        return _collect_vector(dist, checked, episodes, horizon, policy)
    envs = [dist.make_raw_env(checked[0]) for _ in range(episodes)]
    parts = []
    for k, task in enumerate(checked):
        for env in envs:
            env.set_task(task)  # type: ignore[attr-defined]
        seq = np.random.SeedSequence([seed, k])
        reset_seeds = seq.generate_state(episodes)
        if policy is not None:
            parts.append(_rollout(envs, horizon, reset_seeds, policy))
            continue
        rng = np.random.default_rng(seq)
        actions = _random_actions(envs[0].action_space, rng, horizon, episodes)
        if reference:
            parts.append(_rollout(envs, horizon, reset_seeds, _replay(actions)))
        else:
            parts.append(_rollout_open_loop(envs, horizon, reset_seeds, actions))
    for env in envs:
        env.close()
    return _to_task_data(dist, checked, parts)


def _collect_vector(
    dist: TaskDistribution, tasks: list[TaskParams], episodes: int, horizon: int, policy: BehaviourPolicy
) -> TaskData:
    """``collect`` of a policy through ``dist.vector_env``; the same data as the env loop."""
    assert dist.vector_env is not None
    parts = [_rollout_vector(dist.vector_env([t] * episodes), horizon, policy) for t in tasks]
    return _to_task_data(dist, tasks, parts)


def _collect_vector_random(
    dist: TaskDistribution, tasks: list[TaskParams], episodes: int, horizon: int, seed: int
) -> TaskData:
    """``collect`` of the random policy through ``dist.vector_env``, all K tasks as one batch.

    The actions of task k are drawn from the same generator as on the env-loop paths, so the
    data equal theirs bit for bit; they do not depend on observations, so one vectorised env of
    K * E rows (one task per row) replaces K envs of E rows and each numpy call of a step serves
    K times as many transitions. A vectorised env's reset is deterministic (``reset`` takes no
    seed), which is why the reset seeds of the env loop are not needed here.
    """
    assert dist.vector_env is not None
    venv = dist.vector_env([t for t in tasks for _ in range(episodes)])
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, k])) for k in range(len(tasks))]
    per_task = [_random_actions(venv.action_space, rng, horizon, episodes) for rng in rngs]
    actions = np.concatenate(per_task, axis=1)  # (T, K * E, ...), rows task-major
    rows = _rollout_vector(venv, horizon, _replay(actions))
    parts = [tuple(x[k * episodes : (k + 1) * episodes] for x in rows) for k in range(len(tasks))]
    return _to_task_data(dist, tasks, parts)


def collect_switching_stream(
    dist: TaskDistribution,
    task_a: TaskParams,
    task_b: TaskParams,
    horizon: int,
    switch_at: int,
    seed: int,
    policy: BehaviourPolicy | None = None,
) -> TaskData:
    """One episode that runs in ``task_a`` and switches to ``task_b`` before step ``switch_at``.

    The switch goes through ``env.set_task`` mid-episode, so the state carries over and only
    the dynamics (or reward) change: the setting for online adaptation.

    Returns:
        TaskData with one task (``task_a``), one episode of ``horizon`` steps, and
        ``switch = (switch_at, task_b)``.
    """
    where = f"collect_switching_stream({dist.name!r})"
    horizon = _check_int(where, "horizon", horizon, 2)
    switch_at = _check_int(where, "switch_at", switch_at, 1)
    if switch_at >= horizon:
        raise ValueError(f"{where}: switch_at expected in [1, {horizon - 1}], got {switch_at}")
    seed = _check_int(where, "seed", seed, 0)
    a, b = dist.check(task_a), dist.check(task_b)
    env = dist.make_raw_env(a)
    seq = np.random.SeedSequence([seed, 0])
    rng = np.random.default_rng(seq)
    behaviour = policy or _replay(_random_actions(env.action_space, rng, horizon, 1))
    part = _rollout([env], horizon, seq.generate_state(1), behaviour, switch=(switch_at, b))
    env.close()
    return _to_task_data(dist, [a], [part], switch=(switch_at, b))
