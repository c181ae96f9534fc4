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
- ``estimate`` / ``check_size`` (``suites.size_estimate``): the cell count and a cheap upper
  estimate of one cell's memory;
  a run of more than ``MAX_CELLS`` cells, or whose ``--jobs`` cells at once would not fit this
  machine's available memory, is refused unless ``--yes``.

Every refusal is a one-line ``PreflightError`` naming the option or the suite field.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from suites.size_estimate import check_size
from suites.spec import SuiteSpec
from suites.validate import PreflightError

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
