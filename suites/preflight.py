"""What a run must pass before any compute: where it writes, where it runs, what it costs.

``suites.spec.load_suite`` checks the suite itself. This module checks what depends on the
command line and on this machine, before ``suites.runner.run_suite`` creates the run directory
(``suites.cli`` calls ``check_run``):

- ``check_output_dir``: ``--out`` and ``--report-dir`` are directories (or can become ones) under
  a writable directory with some free space; a file on the way, ``/proc`` or a read-only or full
  file system is named with the option before anything runs;
- ``check_scheduler``: ``--scheduler`` looks like an address and a Dask scheduler answers there
  within ``SCHEDULER_TIMEOUT_S`` seconds (the runner connects again when it runs);
- ``check_devices``: ``timing.device = "cuda"`` needs a visible CUDA device where cells run
  (this machine with ``--backend loky``; a Dask cluster's workers are not checked from here);
- ``estimate`` / ``check_size``: the cell count and a cheap upper estimate of one cell's memory;
  a run of more than ``MAX_CELLS`` cells, or whose ``--jobs`` cells at once would not fit this
  machine's available memory, is refused unless ``--yes``.

Every refusal is a one-line ``PreflightError`` naming the option or the suite field.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from suites.protocols import PROTOCOLS
from suites.spec import ProtocolSpec, SuiteSpec


class PreflightError(ValueError):
    """A run would fail, or should not start, for a reason found before any compute; one line."""


MAX_CELLS = 10_000
"""More cells than this need ``--yes`` (the full suite has 750)."""
MIN_FREE_BYTES = 16 << 20
"""Free space an output directory's file system must have (a quick run writes about 5 MB)."""
SCHEDULER_TIMEOUT_S = 5.0
"""Seconds to wait for a Dask scheduler to answer before the run is refused."""
MAX_PATH_BYTES = 4_000
MAX_NAME_BYTES = 255

# ---- output directories


def _nearest_existing(path: Path) -> tuple[Path, bool]:
    """(the nearest of ``path`` and its ancestors that exists, whether it is ``path`` itself)."""
    for candidate in (path, *path.parents):
        try:
            candidate.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        return candidate, candidate == path
    return Path(path.anchor or "."), False


def check_output_dir(option: str, path: str | Path, *, resumable: bool = False) -> None:
    """Refuse an output directory that cannot be created and written, naming ``option``.

    ``path`` may exist (a directory) or not yet (the runner or the report creates it and its
    missing parents); the nearest existing ancestor must then be a directory in which a
    directory can be created (tried and removed at once) on a file system with at least
    ``MIN_FREE_BYTES`` free.

    Args:
        option: the command-line option, e.g. ``"--out"``.
        path: the directory.
        resumable: an existing directory is a run to resume (the message says so).
    """
    text = str(path)
    if not text:
        raise PreflightError(f"{option}: expected a directory path, got ''")
    if "\x00" in text:
        raise PreflightError(f"{option} {text!r}: expected a path without NUL bytes")
    target = Path(text).absolute()
    if len(os.fsencode(str(target))) > MAX_PATH_BYTES:
        raise PreflightError(f"{option}: expected a path of at most {MAX_PATH_BYTES} bytes, got "
                             f"{len(os.fsencode(str(target)))} bytes")  # fmt: skip
    for part in target.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise PreflightError(f"{option} {text[:80]}...: expected names of at most {MAX_NAME_BYTES} bytes "
                                 f"between slashes, got one of {len(os.fsencode(part))} bytes")  # fmt: skip
    try:
        existing, is_target = _nearest_existing(target)
    except OSError as err:
        raise PreflightError(f"{option} {text}: expected a directory path, got {err.strerror or err}") from None
    if not existing.is_dir():
        if is_target:
            kind = "a directory (new, or a run to resume)" if resumable else "a directory"
            raise PreflightError(f"{option} {text}: expected {kind}, got a file")
        raise PreflightError(f"{option} {text}: expected a directory path, got {existing}, which is not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".ssm-metarl-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as err:
        raise PreflightError(
            f"{option} {text}: expected a writable directory, got {err.strerror or err} on {existing}"
        ) from None
    try:
        stat = os.statvfs(existing)
    except (OSError, AttributeError):  # no statvfs (Windows) or a file system that does not say
        return
    free = stat.f_bavail * stat.f_frsize
    if free < MIN_FREE_BYTES:
        raise PreflightError(f"{option} {text}: expected at least {MIN_FREE_BYTES >> 20} MiB free on {existing}, "
                             f"got {free / 2**20:.1f} MiB")  # fmt: skip


# ---- the Dask scheduler

ADDRESS = re.compile(
    r"(?:(?:tcp|tls|ucx|ws|wss)://)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?)"
    r":(?P<port>[0-9]{1,5})/?"
    r"|inproc://[^\s/]+(?:/[^\s/]+)*"
)
"""A Dask scheduler address: [tcp|tls|ucx|ws|wss://]host:port (host a name, IPv4 or [IPv6]; Dask
needs the port), or inproc://..."""


def check_scheduler_address(address: str) -> None:
    """Raise PreflightError unless ``address`` looks like a Dask scheduler address."""
    match = ADDRESS.fullmatch(address)
    port = match.group("port") if match else None
    if match is None or (port is not None and not 1 <= int(port) <= 65535):
        raise PreflightError(f"--scheduler: expected an address like tcp://host:8786, got {address[:200]!r}")


async def _identity(address: str, timeout: float) -> dict[str, Any]:
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        reply = await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()
    if not isinstance(reply, dict):
        raise TypeError(f"a {type(reply).__name__} reply")
    return reply


def check_scheduler(address: str, timeout: float | None = None) -> int:
    """Contact the Dask scheduler at ``address``; return its number of workers.

    Asks the scheduler for its identity over one short-lived connection (no ``Client`` is left
    behind), in a thread of its own, waiting at most ``timeout`` seconds (default
    ``SCHEDULER_TIMEOUT_S``) for the connection and as long for the answer.

    Raises:
        PreflightError: a bad address, dask.distributed missing, no answer, or an answer that
            is not a Dask scheduler's.
    """
    check_scheduler_address(address)
    timeout = SCHEDULER_TIMEOUT_S if timeout is None else timeout
    try:
        import distributed.comm  # noqa: F401  (optional extra: pip install -e ".[dask]")
    except ImportError as err:
        raise PreflightError(f"--backend dask: expected dask.distributed installed (pip install -e '.[dask]'), "
                             f"got ImportError: {err}") from None  # fmt: skip
    result: dict[str, Any] = {}

    def ask() -> None:
        try:
            result["reply"] = asyncio.run(asyncio.wait_for(_identity(address, timeout), 2 * timeout + 1))
        except BaseException as err:  # any failure, reported as one line below
            result["error"] = err

    thread = threading.Thread(target=ask, name="ssm-metarl-scheduler-check", daemon=True)
    thread.start()
    thread.join(2 * timeout + 2)
    error = result.get("error")
    if "reply" not in result:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}" if error else "no answer"
        raise PreflightError(f"--scheduler {address}: expected a Dask scheduler answering within {timeout:g} s, "
                             f"got {reason[:200]}")  # fmt: skip
    reply = result["reply"]
    if reply.get("type") != "Scheduler":
        raise PreflightError(f"--scheduler {address}: expected a Dask scheduler, got a {reply.get('type')!r} "
                             f"answer")  # fmt: skip
    return len(reply.get("workers") or {})


# ---- devices


def check_devices(spec: SuiteSpec, backend: str) -> None:
    """Refuse ``timing.device = "cuda"`` without a visible CUDA device where the cells would run.

    With ``--backend dask`` the cells run on the cluster's workers, which this machine cannot
    see: nothing is checked.
    """
    if backend != "loky":
        return
    for p in spec.protocols:
        if getattr(p.settings, "device", "cpu") == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise PreflightError(f"{spec.source}: {p.protocol}.device: expected a visible CUDA device for "
                                     f"'cuda', got none (torch.cuda.is_available() is False)")  # fmt: skip


# ---- size: cells and memory

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


# ---- everything


def check_run(
    spec: SuiteSpec,
    run_dir: Path,
    report_dir: Path | None,
    *,
    jobs: int,
    backend: str,
    scheduler: str | None,
    yes: bool = False,
) -> None:
    """Every check of a ``run`` before any compute and before the run directory exists.

    Args:
        spec: the loaded suite.
        run_dir: the run directory (``--out``, or the default under results/).
        report_dir: where the report goes, or None with ``--no-report``.
        jobs, backend, scheduler: as given to ``run_suite``.
        yes: run even if the size checks refuse.
    """
    check_output_dir("--out", run_dir, resumable=True)
    if report_dir is not None:
        check_output_dir("--report-dir", report_dir)
    check_devices(spec, backend)
    if not yes:
        check_size(spec, jobs, backend)
    if backend == "dask":
        if not scheduler:
            raise PreflightError("--scheduler: expected an address like tcp://host:8786 with --backend dask, got none")
        check_scheduler(scheduler)
