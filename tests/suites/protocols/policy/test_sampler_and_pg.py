"""Sampling with shared and per-task weights, inner adaptation, and the vmapped meta-gradient."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from meta.functional import sgd_update
from models import MODELS
from suites.protocols.policy import (
    adapt,
    make_batch_env,
    make_policy,
    meta_loss,
    post_loss,
    process,
    rollout,
    surrogate,
)
from suites.tasks import get_distribution

DIST = get_distribution("point-nav-2d")
K, N, H = 3, 4, 12


def _setup(model: str):
    torch.manual_seed(0)
    policy = make_policy(model, 2, DIST.make_raw_env(DIST.test_tasks(1)[0]).action_space, hidden_dim=16)
    env = make_batch_env(DIST, DIST.test_tasks(K), N, seed=0)
    return policy, env


def _copies(policy, k):
    return OrderedDict((n, p.detach().unsqueeze(0).expand(k, *p.shape).clone()) for n, p in policy.named_parameters())


@pytest.mark.parametrize("model", ["mlp", "gru", "ssm"])
def test_per_task_weights_equal_to_theta_sample_the_same_episodes(model):
    """The vmapped per-task step path equals the plain batched path when every task has theta."""
    policy, env = _setup(model)
    shared = rollout(policy, env, K, H, torch.Generator().manual_seed(5))
    per_task = rollout(policy, env, K, H, torch.Generator().manual_seed(5), weights=_copies(policy, K), per_task=True)
    for field in ("obs", "actions", "rewards", "mask"):
        assert torch.allclose(getattr(shared, field), getattr(per_task, field), atol=1e-5), field
    assert shared.obs.shape == (K, N, H, 2)


def _distinct_fast_weights(policy, env):
    """Per-task weights after one inner step of each task: a different set per task."""
    fast = adapt(policy, [_stage(policy, env, 1)], lr=0.5)
    return OrderedDict((n, w.detach()) for n, w in fast.items())


def _task_by_task(policy, weights):
    """A step of K * N rows: each task's N rows through ``functional_call`` with that task's own
    weights and state, one task after another (no vmap)."""
    states = [policy.init_state(N) for _ in range(K)]

    def step(obs):
        outs = []
        for k in range(K):
            w_k = {name: w[k] for name, w in weights.items()}
            out, states[k] = functional_call(policy, w_k, (obs[k * N : (k + 1) * N], states[k]))
            outs.append(out)
        return torch.cat(outs)

    return step


def _vmap_every_step(policy, weights):
    """A step of K * N rows: one ``vmap`` over the tasks of ``functional_call`` (the batched definition)."""
    state = tree_map(lambda t: torch.stack([t] * K), policy.init_state(N))
    batched = vmap(lambda w, x, s: functional_call(policy, w, (x, s)))

    def step(obs):
        nonlocal state
        out, state = batched(dict(weights), obs.view(K, N, -1), state)
        return out.reshape(K * N, -1)

    return step


@torch.no_grad()
def _episodes(policy, env, step, generator):
    """Episodes of ``env``'s K * N rows written out independently of the sampler: ``step`` for the
    policy, then one action draw for all rows and one env step, masking rows whose episode ended."""
    obs_np = env.reset()
    running = np.ones(K * N, dtype=bool)
    obs_rows, act_rows, rew_rows, mask_rows = [], [], [], []
    for _ in range(H):
        obs = torch.from_numpy(obs_np)
        action = policy.sample(step(obs), generator)
        obs_rows.append(obs)
        act_rows.append(action)
        mask_rows.append(torch.from_numpy(running.astype(np.float32)))
        obs_np, reward, done = env.step(action.double().numpy())
        rew_rows.append(torch.from_numpy(np.where(running, reward, 0.0).astype(np.float32)))
        running = running & ~done
    assert running.any()  # rollout stops early only once every row has ended: compare all H steps

    def stack(xs):
        return torch.stack(xs, dim=1).reshape(K, N, H, *xs[0].shape[1:])

    return {"obs": stack(obs_rows), "actions": stack(act_rows), "rewards": stack(rew_rows), "mask": stack(mask_rows)}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_per_task_weights_sample_what_each_tasks_own_weights_sample(model):
    """Per-task weights sample the episodes of each task's rows stepped on their own with that task's
    weights (same noise, same env), and exactly those of one vmapped functional_call per step."""
    policy, env = _setup(model)
    fast = _distinct_fast_weights(policy, env)
    theta = [(p, p.detach().clone()) for p in policy.parameters()]
    gens = [torch.Generator().manual_seed(7) for _ in range(3)]
    sampled = rollout(policy, env, K, H, gens[0], weights=fast, per_task=True)
    by_task = _episodes(policy, env, _task_by_task(policy, fast), gens[1])
    vmapped = _episodes(policy, env, _vmap_every_step(policy, fast), gens[2])
    # task by task runs other kernels than the K tasks' batch: equal up to float32 rounding
    for field in ("obs", "actions", "rewards"):
        assert torch.allclose(getattr(sampled, field), by_task[field], rtol=0, atol=1e-5), field
    assert torch.equal(sampled.mask, by_task["mask"])
    for field in ("obs", "actions", "rewards", "mask"):  # the batched definition: to the last bit
        assert torch.equal(getattr(sampled, field), vmapped[field]), field
    for gen in gens[1:]:  # the same noise drawn
        assert torch.equal(gens[0].get_state(), gen.get_state())
    # the tasks' weights differ, so the tasks act differently from each other and from theta
    shared = rollout(policy, env, K, H, torch.Generator().manual_seed(7))
    assert not torch.allclose(sampled.actions, shared.actions, atol=1e-4)
    for p, (own, before) in zip(policy.parameters(), theta, strict=True):  # the module has its own weights back
        assert p is own and torch.equal(p, before)


class _FailingEnv:
    """Point-nav rows whose third step raises."""

    def __init__(self, env) -> None:
        self.env, self.num_envs, self.calls = env, env.num_envs, 0

    def reset(self) -> np.ndarray:
        return self.env.reset()

    def step(self, actions: np.ndarray):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("env failed")
        return self.env.step(actions)


def test_per_task_steps_leave_no_vmap_level_or_swapped_weights_after_an_error():
    policy, env = _setup("gru")
    fast = _distinct_fast_weights(policy, env)
    theta = [(p, p.detach().clone()) for p in policy.parameters()]
    with pytest.raises(RuntimeError, match="env failed"):
        rollout(policy, _FailingEnv(env), K, H, torch.Generator(), weights=fast, per_task=True)
    torch.randn(3)  # raises while a vmap level in randomness="error" mode is left behind
    for p, (own, before) in zip(policy.parameters(), theta, strict=True):  # its own tensors, unchanged
        assert p is own and torch.equal(p, before)


def test_per_task_weights_of_a_tied_policy_reach_every_alias():
    """A policy whose model shares one tensor under two names: per-task weights given under one
    name must reach the other too (functional_call's untying pass, kept for such policies only)."""
    policy, env = _setup("mlp")
    hidden = [m for m in policy.model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 16]
    hidden[1].bias = hidden[0].bias  # tied: named_parameters() now lists it once
    weights = _copies(policy, K)
    name = next(n for n, p in policy.named_parameters() if p is hidden[0].bias)
    weights[name] = weights[name] + 0.5  # moves both aliases, or only the first without untying
    tied = rollout(policy, env, K, H, torch.Generator().manual_seed(5), weights=weights, per_task=True)
    with torch.no_grad():
        hidden[0].bias += 0.5  # the same weights written into the module itself
    direct = rollout(policy, env, K, H, torch.Generator().manual_seed(5))
    assert torch.allclose(tied.actions, direct.actions, atol=1e-5)


def test_episodes_that_reach_the_goal_are_masked_afterwards():
    policy, _ = _setup("mlp")
    goal = DIST.params(goal_x=0.0, goal_y=0.05)
    env = make_batch_env(DIST, [goal], 2, seed=0)
    with torch.no_grad():  # a deterministic policy stepping (0, 0.05): at the goal after one step
        for p in policy.parameters():
            p.zero_()
        policy.model.net[-1].bias.copy_(torch.tensor([0.0, 0.05]))
        policy.log_std.fill_(-30.0)
    traj = rollout(policy, env, 1, 5, torch.Generator().manual_seed(0))
    assert traj.mask[0, :, 0].tolist() == [1.0, 1.0] and traj.mask[0, :, 1:].sum() == 0
    assert torch.allclose(traj.rewards[0, :, 0], torch.zeros(2), atol=1e-6)


def test_rollout_rejects_a_bad_task_count():
    policy, env = _setup("mlp")
    with pytest.raises(ValueError, match="num_tasks"):
        rollout(policy, env, 5, H, torch.Generator())


def _stage(policy, env, seed, weights=None):
    gen = torch.Generator().manual_seed(seed)
    traj = rollout(policy, env, K, H, gen, weights=weights, per_task=weights is not None)
    return process(traj, 0.99)


def test_one_inner_step_is_sgd_on_each_tasks_surrogate():
    policy, env = _setup("gru")
    stage = _stage(policy, env, 1)
    fast = adapt(policy, [stage], lr=0.3)
    theta = OrderedDict(policy.named_parameters())
    for k in range(K):
        data = tuple(x[k] for x in stage.as_tuple())
        loss = surrogate(policy, theta, data, policy.init_state(N))
        grads = torch.autograd.grad(loss, list(theta.values()))
        expected = sgd_update(theta, OrderedDict(zip(theta, grads, strict=True)), 0.3)
        for name in theta:
            assert torch.allclose(fast[name][k], expected[name], atol=1e-6), name
    # the two curvature estimators share the first derivative
    fast_reinforce = adapt(policy, [stage], lr=0.3, estimator="reinforce")
    fast_lvc = adapt(policy, [stage], lr=0.3, estimator="lvc")
    for name in theta:
        assert torch.allclose(fast_reinforce[name], fast_lvc[name], atol=1e-6)


def _loop_meta_grad(policy, stages, post, lr, estimator):
    """Reference: per task, create_graph through the inner steps with torch.autograd.grad."""
    theta = OrderedDict(policy.named_parameters())
    total = 0.0
    for k in range(K):
        w = theta
        for stage in stages:
            data = tuple(x[k] for x in stage.as_tuple())
            loss = surrogate(policy, w, data, policy.init_state(N), estimator)
            grads = torch.autograd.grad(loss, list(w.values()), create_graph=True)
            w = sgd_update(w, OrderedDict(zip(w, grads, strict=True)), lr)
        total = total + surrogate(policy, w, tuple(x[k] for x in post.as_tuple()), policy.init_state(N))
    return torch.autograd.grad(total / K, list(theta.values()))


@pytest.mark.parametrize("model", ["mlp", "gru"])
@pytest.mark.parametrize("estimator", ["reinforce", "lvc"])
def test_vmapped_meta_gradient_equals_the_per_task_create_graph_loop(model, estimator):
    policy, env = _setup(model)
    s0 = _stage(policy, env, 1)
    s1 = _stage(policy, env, 2, adapt(policy, [s0], 0.2))
    post = _stage(policy, env, 3, adapt(policy, [s0, s1], 0.2))
    loss = meta_loss(policy, [s0, s1], post, 0.2, estimator=estimator)
    fast = torch.autograd.grad(loss, list(policy.parameters()))
    ref = _loop_meta_grad(policy, [s0, s1], post, 0.2, estimator)
    for a, b in zip(fast, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("first_order", [False, True])
def test_stepwise_adapt_then_post_loss_equals_meta_loss(first_order):
    """The training loop's path (adapt step by step, graph kept, then post_loss) gives meta_loss's gradient."""
    policy, env = _setup("gru")
    s0 = _stage(policy, env, 1)
    fast1 = adapt(policy, [s0], 0.2, first_order=first_order, estimator="lvc")
    s1 = _stage(policy, env, 2, fast1)
    fast2 = adapt(policy, [s1], 0.2, weights=fast1, per_task=True, first_order=first_order, estimator="lvc")
    post = _stage(policy, env, 3, fast2)
    stepwise = torch.autograd.grad(post_loss(policy, fast2, post), list(policy.parameters()))
    loss = meta_loss(policy, [s0, s1], post, 0.2, first_order=first_order, estimator="lvc")
    reference = torch.autograd.grad(loss, list(policy.parameters()))
    for a, b in zip(stepwise, reference, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_second_order_terms_change_the_meta_gradient():
    """First order, reinforce and lvc meta-gradients differ (the curvature terms are present)."""
    policy, env = _setup("mlp")
    s0 = _stage(policy, env, 1)
    post = _stage(policy, env, 2, adapt(policy, [s0], 0.5))

    def grad(**kw):
        loss = meta_loss(policy, [s0], post, 0.5, **kw)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(policy.parameters()))])

    first, reinforce, lvc = grad(first_order=True), grad(estimator="reinforce"), grad(estimator="lvc")
    assert (first - reinforce).norm() > 1e-4 * first.norm()
    assert (reinforce - lvc).norm() > 1e-4 * first.norm()


def test_meta_loss_rejects_an_unknown_estimator():
    policy, env = _setup("mlp")
    s0 = _stage(policy, env, 1)
    with pytest.raises(ValueError, match="estimator"):
        meta_loss(policy, [s0], s0, 0.1, estimator="dice")


def test_gym_batch_steps_mujoco_envs_as_one_batch():
    dist = get_distribution("halfcheetah-vel")
    tasks = dist.test_tasks(2)
    env = make_batch_env(dist, tasks, 2, seed=0)
    policy = make_policy("mlp", 18, env.action_space, hidden_dim=8)
    traj = rollout(policy, env, 2, 5, torch.Generator().manual_seed(0))
    assert traj.obs.shape == (2, 2, 5, 18) and traj.actions.shape == (2, 2, 5, 6)
    # each reward is the task's own: -|v - v*| - 0.05 ||a||^2 from consecutive observations
    obs, acts = traj.obs[:, :, :-1].double().numpy(), traj.actions[:, :, :-1].double().numpy()
    nxt = traj.obs[:, :, 1:].double().numpy()
    for k, task in enumerate(tasks):
        expected = dist.reward(obs[k], acts[k], nxt[k], task)
        np.testing.assert_allclose(traj.rewards[k, :, :-1].numpy(), expected, rtol=1e-4, atol=1e-4)


class _Chain:
    """A discrete test env: move left (0) or right (1) by 0.1; the reward is the position."""

    action_space = spaces.Discrete(2)

    def __init__(self, rows: int) -> None:
        self.num_envs = rows
        self.pos = np.zeros((rows, 1))

    def reset(self) -> np.ndarray:
        self.pos[:] = 0.0
        return self.pos.astype(np.float32)

    def reset_rows(self, mask: np.ndarray) -> np.ndarray:
        self.pos[mask] = 0.0
        return self.pos.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert actions.dtype == np.int64 and set(np.unique(actions)) <= {0, 1}
        self.pos[:, 0] += np.where(actions == 1, 0.1, -0.1)
        return self.pos.astype(np.float32), self.pos[:, 0].copy(), np.zeros(self.num_envs, dtype=bool)


@pytest.mark.parametrize("model", ["mlp", "lstm"])
def test_categorical_policy_adapts_towards_the_better_action(model):
    torch.manual_seed(0)
    policy = make_policy(model, 1, _Chain.action_space, hidden_dim=8)
    traj = rollout(policy, _Chain(2 * 16), 2, 6, torch.Generator().manual_seed(0))
    assert traj.actions.dtype == torch.int64 and traj.actions.shape == (2, 16, 6)
    fast = adapt(policy, [process(traj, 0.99)], lr=1.0)
    start = torch.zeros(1, 1)

    def p_right(weights):
        out, _ = torch.func.functional_call(policy, weights, (start, policy.init_state(1)))
        return float(torch.softmax(out.detach(), -1)[0, 1])

    before = p_right(dict(policy.named_parameters()))
    for k in range(2):
        assert p_right({n: w[k] for n, w in fast.items()}) > before + 0.02
