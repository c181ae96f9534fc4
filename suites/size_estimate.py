"""The size of a run before it starts: its cell count and a cheap upper estimate of one cell's memory.

``check_size`` refuses a run of more than ``MAX_CELLS`` cells, or one whose ``--jobs`` cells at
once would not fit this machine's available memory (``suites.preflight.check_run`` calls it
unless ``--yes``). The per-step coefficients below are upper estimates from cells measured on
the 2-core reference machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator

from suites.protocols import PROTOCOLS
from suites.spec import ProtocolSpec, SuiteSpec
from suites.validate import PreflightError

MAX_CELLS = 10_000
"""More cells than this need ``--yes`` (the full suite has 750)."""


BASE_BYTES = 400 << 20
"""A worker process before its cell allocates: Python, torch, gymnasium and MuJoCo (380 MB measured)."""
ACTIVATION_BYTES = 96
"""Bytes per unit of width, per window step, that a vmapped MAML step keeps for its backward pass
(times ``1 + inner steps``); the width is taken as sqrt(param_budget). Measured with the weights
below: 19-58 KB per window step at 100k parameters (mlp to gru, 16 tasks x 16 windows x 50 steps)."""
ROLLOUT_BYTES = 192
"""The same per sampled step of a policy rollout: 54 KB per step at 100k parameters (gru, MAML-RL
evaluation on 20 tasks x 20 episodes x 100 steps)."""
PLAIN_ACTIVATION_BYTES = 80
"""The same for a plain forward + backward (the timing sweeps, evaluation): 5.5-21 KB per step at
100k parameters (mlp to transformer)."""
WEIGHT_STEP_BYTES = 6
"""Bytes per parameter, per task and step, that a recurrent model keeps under vmapped per-task
weights (GRU at 400k parameters: 1.1 GB for 8 tasks x 58 steps)."""


CACHED_DATASETS = 8
"""The ``lru_cache`` size of the collected data a worker keeps (``_training_data``, ``_cell_data``)."""


def cached_step_bytes(obs_dim: int, act_dim: int) -> int:
    """Memory of one collected step kept in a worker's cache: inputs, targets, start and reward in float32."""
    return 4 * (2 * obs_dim + act_dim + 2)


def step_bytes(obs_dim: int, act_dim: int) -> int:
    """Memory of one collected step, every copy included (rollout buffers in float64, the
    tensors, normalised data, windows): 570 B measured on the pendulum, 2.2 KB on HalfCheetah."""
    return 256 + 96 * (obs_dim + act_dim)


@contextlib.contextmanager
def _quiet_mujoco() -> Iterator[None]:
    """MuJoCo warnings while a model loads go nowhere (by default they go to stderr and to a
    MUJOCO_LOG.TXT in the working directory, which a refused run must not leave behind)."""
    try:
        import mujoco
    except ImportError:
        mujoco = None
    previous = mujoco.get_mju_user_warning() if mujoco is not None else None
    if mujoco is not None:
        mujoco.set_mju_user_warning(lambda message: None)
    try:
        yield
    finally:
        if mujoco is not None:
            mujoco.set_mju_user_warning(previous)


@functools.cache
def task_dims(task: str) -> tuple[int, int]:
    """(observation size, action size: one-hot width if discrete) of a task's environment."""
    from gymnasium import spaces

    from suites.tasks import get_distribution

    dist = get_distribution(task)
    with _quiet_mujoco():
        env = dist.make_raw_env(dist.test_tasks(1)[0])
    try:
        obs = int(math.prod(env.observation_space.shape or (1,)))
        space = env.action_space
        act = int(space.n) if isinstance(space, spaces.Discrete) else int(math.prod(space.shape or (1,)))
    finally:
        env.close()
    return obs, act


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Cells of one protocol and an upper estimate of the memory one of them needs.

    Attributes:
        protocol: the protocol.
        cells: its number of cells.
        bytes_per_cell: estimated peak memory of one cell's process, ``BASE_BYTES`` included.
        largest: what dominates the estimate, in words (for the refusal message).
    """

    protocol: str
    cells: int
    bytes_per_cell: float
    largest: str


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def _maml_bytes(budget: int, batch: int, windows: int, length: int, inner_steps: int) -> float:
    """Meta-training memory: activations of every window step, and per-task weights per step."""
    width = math.sqrt(budget)
    activations = batch * windows * length * ACTIVATION_BYTES * width * (1 + inner_steps)
    weights = batch * (length + 8) * WEIGHT_STEP_BYTES * budget * inner_steps
    return activations + weights


def _cell_bytes(p: ProtocolSpec, budget: int, seeds: int) -> tuple[float, str]:
    s = p.settings
    width = math.sqrt(budget)
    dims = [task_dims(t) for t in p.tasks] or [(1, 1)]
    per_step = max(step_bytes(*d) for d in dims)
    parts: dict[str, float] = {}
    if p.protocol in ("dynamics", "mpc"):
        steps = s.train_tasks * s.episodes_per_task * s.horizon
        if p.protocol == "dynamics":
            steps += s.test_tasks * s.episodes_per_task * s.horizon + s.streams * s.stream_horizon
            parts["evaluation"] = s.episodes_per_task * s.horizon * PLAIN_ACTIVATION_BYTES * width * 2
        else:
            steps += s.oracle_episodes * s.horizon + s.episodes * s.episode_steps
            parts["planning"] = s.candidates * s.plan_horizon * PLAIN_ACTIVATION_BYTES * width
        # a worker keeps the raw data of up to CACHED_DATASETS (task, seed) pairs it ran (train.py, protocol.py)
        kept = min(CACHED_DATASETS, seeds * max(1, len(p.tasks))) - 1
        parts["collected data"] = steps * per_step + kept * steps * max(cached_step_bytes(*d) for d in dims)
        parts["meta-training"] = _maml_bytes(budget, s.meta_batch, s.support_windows + s.query_windows,
                                             s.sequence_length, s.inner_steps)  # fmt: skip
    elif p.protocol == "policy":
        horizon = s.horizon or max(_task_horizon(t) for t in p.tasks)
        env_steps = s.meta_batch * s.episodes_per_task * horizon
        parts["meta-training rollouts"] = (1 + s.inner_steps) / 2 * env_steps * (
            per_step + ROLLOUT_BYTES * width
        ) + s.meta_batch * horizon * WEIGHT_STEP_BYTES * budget * s.inner_steps
        test_steps = s.test_tasks * s.test_episodes * horizon
        parts["evaluation rollouts"] = test_steps * (per_step + ROLLOUT_BYTES * width)
    elif p.protocol == "timing":
        io = (s.input_dim + s.output_dim) * 4
        parts["forward+backward sweep"] = s.batch_size * max(s.seq_lengths) * (PLAIN_ACTIVATION_BYTES * width + io)
        widest = max(s.hidden_sizes)
        parts["width sweep"] = s.batch_size * s.hidden_seq_length * (PLAIN_ACTIVATION_BYTES * widest + io) + (
            200 * widest * widest
        )
        parts["step latency"] = max(s.step_batches) * max(s.steps_taken) * (PLAIN_ACTIVATION_BYTES * width + io)
        parts["MAML sweep"] = _maml_bytes(budget, max(s.maml_tasks), 2 * s.maml_windows, s.maml_length,
                                          s.maml_inner_steps)  # fmt: skip
        if s.collect_tasks:
            collect = s.collect_task_count * s.collect_episodes * s.collect_horizon
            parts["collection"] = 2 * collect * max(step_bytes(*task_dims(t)) for t in s.collect_tasks)
    largest = max(parts, key=lambda k: parts[k]) if parts else "the process"
    total = BASE_BYTES + (sum(parts.values()) if p.protocol in ("dynamics", "mpc") else max(parts.values(), default=0))
    return total, f"{largest} about {_gb(parts.get(largest, 0))}"


def _task_horizon(task: str) -> int:
    from suites.tasks import get_distribution

    return get_distribution(task).horizon


def estimate(spec: SuiteSpec) -> list[Estimate]:
    """Per protocol: its cells and an upper estimate of one cell's peak memory.

    The estimate counts what grows with the settings (collected steps, window steps kept for
    the backward pass, per-task weights of the vmapped MAML step, rollouts) with coefficients
    measured on this project's cells (see the constants above), and overestimates most cells by
    up to about 2x: it is meant to catch runs that cannot fit, not to plan tight ones.
    """
    out = []
    for p in spec.protocols:
        protocol = PROTOCOLS[p.protocol]
        cells = max(1, len(p.tasks)) * len(spec.models) * len(protocol.cell_arms(p.arms)) * len(spec.seeds)
        size, largest = _cell_bytes(p, spec.param_budget, len(spec.seeds))
        out.append(Estimate(p.protocol, cells, size, largest))
    return out


def available_memory() -> int | None:
    """Bytes of memory available to new processes (psutil, else /proc/meminfo), or None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or failing: fall back
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_size(spec: SuiteSpec, jobs: int, backend: str) -> list[Estimate]:
    """Refuse more than ``MAX_CELLS`` cells, or (loky) more memory than this machine has available.

    ``jobs`` cells run at once (fewer if there are fewer cells), each needing about its
    protocol's ``Estimate.bytes_per_cell``. With ``--backend dask`` the memory is the workers'
    and is not checked here. Returns the estimates.
    """
    estimates = estimate(spec)
    total = sum(e.cells for e in estimates)
    if total > MAX_CELLS:
        per_seed = total // len(spec.seeds)
        raise PreflightError(f"suite {spec.name}: cells: expected at most {MAX_CELLS} (or pass --yes), got {total} "
                             f"({len(spec.seeds)} seeds x {per_seed} cells per seed)")  # fmt: skip
    if backend != "loky":
        return estimates
    available = available_memory()
    if available is None:
        return estimates
    worst = max(estimates, key=lambda e: e.bytes_per_cell)
    if worst.bytes_per_cell > available:
        raise PreflightError(f"{spec.source}: {worst.protocol}: expected a cell to fit in the {_gb(available)} of "
                             f"memory available, got an estimated {_gb(worst.bytes_per_cell)} per cell "
                             f"({worst.largest}); pass --yes to run anyway")  # fmt: skip
    at_once = min(jobs, total)
    # the largest cells may run together: the at_once largest estimates, cell by cell
    sizes = sorted((e.bytes_per_cell for e in estimates for _ in range(min(e.cells, at_once))), reverse=True)
    need = sum(sizes[:at_once])
    if need > available:
        raise PreflightError(f"--jobs {jobs}: expected {at_once} cells at once to fit in the {_gb(available)} of "
                             f"memory available, got an estimated {_gb(need)} ({worst.protocol} cells about "
                             f"{_gb(worst.bytes_per_cell)} each); lower --jobs or pass --yes")  # fmt: skip
    return estimates


