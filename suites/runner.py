"""Run a suite: expand it into cells, run them in parallel, resume, and write the tables.

Each cell runs in ``execute_cell`` (a top-level function, so loky and Dask can ship it): it sets
its torch threads, seeds itself from the cell alone (so ``--jobs 1`` and ``--jobs 2`` give the
same numbers), runs the protocol, checks that every measurement is finite and writes its rows and
record atomically under ``<run>/cells/``, stamped with the suite hash and cell id. A run holds
``<run>/run.lock`` (``suites.lock``) while it writes the directory. A rerun on the same directory
refuses another suite definition (``suite.hash``, or when that is missing what the cells,
meta.json and suite.toml record), skips cells whose files check out (``storage.load_cell``) and
runs the rest again, naming any file it distrusts; stored models that cannot be loaded are removed
so that the cell that needs one trains it again. The final tables are rebuilt from the cell files,
so they equal an uninterrupted run's.

A loky worker watches the process that started the run and exits within ``PARENT_CHECK_S``
seconds of its death (kill -9 included), instead of idling on for loky's five minutes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from meta.allocator import keep_freed_memory
from models import MODELS
from suites.lock import RunLock, RunLockedError, pid_alive
from suites.metadata import run_metadata
from suites.protocols import PROTOCOLS
from suites.protocols.base import Cell
from suites.resume import check_resume, check_stored_models, to_toml
from suites.spec import SuiteSpec
from suites.storage import (
    CELL_COLUMNS,
    cell_record_path,
    load_cell,
    rows_frame,
    write_cell_rows,
    write_json,
    write_table,
    write_text,
)
from suites.validate import SpecError

log = logging.getLogger(__name__)
BACKENDS = ("loky", "dask")
PARENT_CHECK_S = 0.5
"""How often a worker checks that the process that started the run is alive."""
EXIT_PARENT_GONE = 70


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run did: counts and where it wrote."""

    run_dir: Path
    total: int
    skipped: int
    succeeded: int
    failed: int
    wall_time_s: float

    @property
    def ok(self) -> bool:
        return self.failed == 0


def expand_cells(spec: SuiteSpec) -> list[Cell]:
    """The flat list of cells: protocol x task x model x (cell) arm x seed, in a stable order."""
    cells = []
    for p in spec.protocols:
        protocol = PROTOCOLS[p.protocol]
        for task in p.tasks or ("-",):
            for model in spec.models:
                for cell_arm, reported in protocol.cell_arms(p.arms):
                    for seed in spec.seeds:
                        cells.append(
                            Cell(spec.name, p.protocol, task, model, cell_arm, seed, reported,
                                 spec.param_budget, p.settings)
                        )  # fmt: skip
    return cells


def cell_seed(cell: Cell) -> int:
    """A seed from the cell's task, model and seed (not its arm: arms of one seed share data)."""
    text = f"{cell.protocol}/{cell.task}/{cell.model}/{cell.seed}"
    return int.from_bytes(text.encode(), "little") % (2**31 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class NonFiniteMeasurementError(ValueError):
    """A cell measured NaN or inf: the cell fails, naming the metric, arm and step."""


def check_finite(frame: pd.DataFrame) -> None:
    """Raise ``NonFiniteMeasurementError`` if any row's value is NaN or inf.

    The first line names the first such row and how many there are; further lines list up to 50
    of them (the cell's record keeps the first line as its error, all of them in its traceback).
    """
    bad = frame.loc[~np.isfinite(frame["value"].to_numpy(dtype=float))]
    if bad.empty:
        return
    first = bad.iloc[0]
    lines = [
        f"non-finite measurement: metric {first.metric!r}, arm {first.arm!r}, step {first.step} is "
        f"{first.value} ({len(bad)} of {len(frame)} rows non-finite)"
    ]
    lines += [f"  metric {r.metric!r}, arm {r.arm!r}, step {r.step}: {r.value}" for r in bad.head(50).itertuples()]
    raise NonFiniteMeasurementError("\n".join(lines))


_watched_parent: int | None = None


def watch_parent(parent_pid: int) -> None:
    """In a worker process: exit as soon as ``parent_pid`` (the run's process) is gone.

    A daemon thread, started once per process, checks every ``PARENT_CHECK_S`` seconds that the
    parent still lives (and, when it was this worker's parent, that the worker was not handed to
    another parent); if not, the worker exits at once (``os._exit``): its cell's files are
    written atomically, so nothing half-written stays behind, and the next resume runs the cell.
    A no-op in the run's own process (``--jobs 1``).
    """
    global _watched_parent
    if parent_pid == os.getpid() or _watched_parent == parent_pid:
        return
    _watched_parent = parent_pid
    direct = os.getppid() == parent_pid

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if (direct and os.getppid() != parent_pid) or not pid_alive(parent_pid):
                with contextlib.suppress(OSError):  # stderr may be gone with the parent
                    os.write(2, f"worker {os.getpid()}: the run (pid {parent_pid}) has ended; exiting\n".encode())
                os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="ssm-metarl-parent-watch", daemon=True).start()


def out_error(run_dir: Path, err: OSError) -> OSError:
    """A file-system error while writing the run directory, as one line naming ``--out``."""
    if isinstance(err, RunLockedError):
        return err
    if run_dir.exists() and not run_dir.is_dir():
        return OSError(f"--out {run_dir}: expected a directory (new, or a run to resume), got a file")
    where = f" on {err.filename}" if err.filename else ""
    return OSError(f"--out {run_dir}: expected a writable run directory, got {err.strerror or err}{where}")


@contextlib.contextmanager
def writing(run_dir: Path) -> Iterator[None]:
    """File-system errors inside the block name ``--out`` (see ``out_error``)."""
    try:
        yield
    except OSError as err:
        raise out_error(run_dir, err) from err


def execute_cell(
    cell: Cell, run_dir: str, threads: int, suite_hash: str = "", parent_pid: int | None = None
) -> dict[str, Any]:
    """Run one cell and write its rows and record; never raises for the cell's own failures.

    Args:
        cell: the cell.
        run_dir: the run directory.
        threads: torch threads.
        suite_hash: the suite definition's hash, stamped on the cell's files (``storage.load_cell``
            trusts them on a resume only if it matches).
        parent_pid: the run's process; a worker process exits when it dies (``watch_parent``).
            None on remote (Dask) workers.

    Returns:
        The cell's record (also written as ``cells/<cell_id>.json``). A protocol error or a
        non-finite measurement gives status ``failed`` with the error and traceback. Raises
        OSError, naming ``--out``, only when the record itself cannot be written.
    """
    if parent_pid is not None:
        watch_parent(parent_pid)
    keep_freed_memory()  # once per worker process (cached): see meta/allocator.py
    torch.set_num_threads(threads)
    seed_everything(cell_seed(cell))
    start = time.perf_counter()
    record: dict[str, Any] = {**cell.key(), "cell_id": cell.cell_id, "suite_hash": suite_hash, "params": None,
                              "error": "", "traceback": ""}  # fmt: skip
    try:
        measurements = PROTOCOLS[cell.protocol].run(dataclasses.replace(cell, store=str(Path(run_dir) / "models")))
        rows = [{**cell.key(), **m._asdict()} for m in measurements]
        frame = rows_frame(rows)
        check_finite(frame)
        params = frame.loc[frame.metric == "params", "value"]
        record["params"] = int(params.iloc[0]) if len(params) else None
        record.update(write_cell_rows(Path(run_dir), cell.cell_id, frame, suite_hash))
        record["status"] = "ok"
    except Exception as err:  # a failing cell is recorded; the others go on
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        record["traceback"] = traceback.format_exc()
    record["wall_time_s"] = time.perf_counter() - start
    with writing(Path(run_dir)):
        write_json(cell_record_path(Path(run_dir), cell.cell_id), record)
    return record


def _run_parallel(
    cells: list[Cell], run_dir: Path, jobs: int, threads: int, backend: str, scheduler: str | None, suite_hash: str
) -> Iterator[dict[str, Any]]:
    if backend == "dask":
        from dask.distributed import Client  # optional extra: pip install .[dask]

        calls = (joblib.delayed(execute_cell)(c, str(run_dir), threads, suite_hash) for c in cells)
        with Client(scheduler) as client:
            log.info("dask cluster at %s with %d workers", scheduler, len(client.scheduler_info()["workers"]))
            with joblib.parallel_config(backend="dask"):
                yield from joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(calls)
        return
    if jobs == 1:
        yield from (execute_cell(c, str(run_dir), threads, suite_hash) for c in cells)
        return
    parent = os.getpid()
    calls = (joblib.delayed(execute_cell)(c, str(run_dir), threads, suite_hash, parent) for c in cells)
    yield from joblib.Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(calls)


def run_suite(
    spec: SuiteSpec,
    run_dir: Path,
    *,
    jobs: int = 1,
    backend: str = "loky",
    scheduler: str | None = None,
    threads: int = 1,
    progress: bool = True,
) -> RunSummary:
    """Run (or resume) every cell of ``spec`` into ``run_dir`` and write the final tables.

    Args:
        spec: the validated suite.
        run_dir: the run directory; an existing one of the same suite is resumed. The run holds
            its lock (``run.lock``) throughout: a second run on it is refused.
        jobs: cells in parallel (loky processes, or Dask tasks at once).
        backend: "loky" (this machine) or "dask" (a Dask cluster at ``scheduler``).
        scheduler: the Dask scheduler address, e.g. tcp://127.0.0.1:8786.
        threads: torch threads per cell. The default 1 keeps ``jobs`` x ``threads`` within the
            cores when ``jobs`` = cores, and makes numbers identical for any ``jobs``: torch's
            multi-threaded reductions sum in another order, and training amplifies that.
        progress: show a progress bar on stderr.

    Raises:
        SpecError: bad arguments, or a directory holding another suite definition.
        OSError: the directory cannot be written, or another run holds it (one line, naming
            ``--out``).
    """
    if backend not in BACKENDS:
        raise SpecError(f"--backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "dask" and not scheduler:
        raise SpecError("--scheduler: expected an address like tcp://host:8786 with --backend dask, got none")
    if not isinstance(jobs, int) or jobs < 1:
        raise SpecError(f"--jobs: expected a positive int, got {jobs!r}")
    if not isinstance(threads, int) or threads < 1:
        raise SpecError(f"--threads: expected a positive int, got {threads!r}")
    if jobs * threads > (os.cpu_count() or 1):
        log.warning("--jobs %d x --threads %d exceeds %d cores: workers will oversubscribe",
                    jobs, threads, os.cpu_count())  # fmt: skip
    unknown = sorted(set(spec.models) - set(MODELS))
    if unknown:
        raise SpecError(f"models: unknown {unknown}; expected any of {sorted(MODELS)}")
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        lock.acquire()
    try:
        return _run_locked(spec, run_dir, jobs, backend, scheduler, threads, progress)
    finally:
        lock.release()


def _run_locked(
    spec: SuiteSpec, run_dir: Path, jobs: int, backend: str, scheduler: str | None, threads: int, progress: bool
) -> RunSummary:
    suite_hash = spec.hash()
    with writing(run_dir):
        check_resume(run_dir, spec)
        write_text(run_dir / "suite.hash", suite_hash + "\n")
        write_text(run_dir / "suite.toml", to_toml(spec.to_dict()))
        check_stored_models(run_dir)

    start = time.perf_counter()
    cells = expand_cells(spec)
    todo = []
    for cell in cells:
        stored = load_cell(run_dir, cell.cell_id, suite_hash)
        if stored.problem:
            log.warning("%s; running the cell again", stored.problem)
        if not stored.ok:
            todo.append(cell)
    skipped = len(cells) - len(todo)
    if skipped:
        log.info("resuming %s: %d of %d cells already finished", run_dir, skipped, len(cells))
    failed = 0
    bar = tqdm(total=len(cells), initial=skipped, desc=spec.name, unit="cell", disable=not progress)
    with bar:
        for record in _run_parallel(todo, run_dir, jobs, threads, backend, scheduler, suite_hash):
            if record["status"] != "ok":
                failed += 1
                log.warning("cell %s failed: %s", record["cell_id"], record["error"])
            bar.set_postfix(failed=failed)
            bar.update()
    wall = time.perf_counter() - start
    with writing(run_dir):
        write_tables(run_dir, spec, cells, jobs=jobs, threads_per_cell=threads, backend=backend, wall_time_s=wall)
    return RunSummary(run_dir, len(cells), skipped, len(todo) - failed, failed, wall)


def write_tables(
    run_dir: Path, spec: SuiteSpec, cells: Iterable[Cell], **run_info: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate the cell files into rows/cells tables (parquet + CSV) and write meta.json.

    Only cell files that ``storage.load_cell`` accepts contribute rows; a cell without them is
    listed with status ``missing`` and the reason. Both parquet tables carry the suite name and
    hash in their schema metadata, as meta.json does, so the report can refuse a mixed directory.
    """
    suite_hash = spec.hash()
    frames, records = [], []
    for cell in cells:
        stored = load_cell(run_dir, cell.cell_id, suite_hash)
        record = stored.record
        if record is None:
            record = {**cell.key(), "cell_id": cell.cell_id, "status": "missing", "wall_time_s": None,
                      "params": None, "error": stored.problem or "not run (interrupted)", "traceback": ""}  # fmt: skip
        records.append(record)
        if stored.ok:
            frames.append(stored.rows)
    rows = pd.concat(frames, ignore_index=True) if frames else rows_frame([])
    rows = rows.sort_values(["protocol", "task", "model", "arm", "seed", "metric", "step"], kind="stable")
    cells_table = pd.DataFrame(records, columns=CELL_COLUMNS)
    cells_table = cells_table.astype({"wall_time_s": "float64", "params": "Float64"})
    stamp = {"suite": spec.name, "suite_hash": suite_hash}
    write_table(run_dir / "rows.parquet", rows.reset_index(drop=True), stamp)
    write_table(run_dir / "cells.parquet", cells_table, stamp)
    write_json(run_dir / "meta.json", run_metadata(spec, **run_info))
    return rows, cells_table
