"""Run a suite: expand it into cells, run them in parallel, resume, and write the tables.

Each cell runs in ``execute_cell`` (a top-level function, so loky and Dask can ship it): it sets
its torch threads, seeds itself from the cell alone (so ``--jobs 1`` and ``--jobs 2`` give the
same numbers), runs the protocol and writes its rows and record atomically under
``<run>/cells/``. A rerun on the same directory skips cells whose record says ``ok``; the final
tables are rebuilt from the cell files, so they equal an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
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
from suites.metadata import run_metadata
from suites.protocols import PROTOCOLS
from suites.protocols.base import Cell
from suites.spec import SuiteSpec
from suites.storage import (
    CELL_COLUMNS,
    cell_record_path,
    cell_rows_path,
    read_cell_record,
    rows_frame,
    write_json,
    write_table,
    write_text,
)
from suites.validate import SpecError

log = logging.getLogger(__name__)
BACKENDS = ("loky", "dask")


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


def execute_cell(cell: Cell, run_dir: str, threads: int) -> dict[str, Any]:
    """Run one cell and write its rows and record; never raises (failures are recorded)."""
    keep_freed_memory()  # once per worker process (cached): see meta/allocator.py
    torch.set_num_threads(threads)
    seed_everything(cell_seed(cell))
    start = time.perf_counter()
    record: dict[str, Any] = {**cell.key(), "cell_id": cell.cell_id, "params": None, "error": "", "traceback": ""}
    try:
        measurements = PROTOCOLS[cell.protocol].run(dataclasses.replace(cell, store=str(Path(run_dir) / "models")))
        rows = [{**cell.key(), **m._asdict()} for m in measurements]
        frame = rows_frame(rows)
        params = frame.loc[frame.metric == "params", "value"]
        record["params"] = int(params.iloc[0]) if len(params) else None
        write_table(cell_rows_path(Path(run_dir), cell.cell_id), frame)
        record["status"] = "ok"
    except Exception as err:  # a failing cell is recorded; the others go on
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        record["traceback"] = traceback.format_exc()
    record["wall_time_s"] = time.perf_counter() - start
    write_json(cell_record_path(Path(run_dir), cell.cell_id), record)
    return record


def _check_resume(run_dir: Path, spec: SuiteSpec) -> None:
    """Refuse a run directory that holds a different suite definition."""
    recorded = run_dir / "suite.hash"
    if recorded.is_file() and recorded.read_text().strip() != spec.hash():
        raise SpecError(
            f"--out {run_dir}: holds a run of a different suite definition (hash "
            f"{recorded.read_text().strip()}, this one {spec.hash()}); use a new --out directory"
        )


def _run_parallel(
    cells: list[Cell], run_dir: Path, jobs: int, threads: int, backend: str, scheduler: str | None
) -> Iterator[dict[str, Any]]:
    calls = (joblib.delayed(execute_cell)(c, str(run_dir), threads) for c in cells)
    if backend == "dask":
        from dask.distributed import Client  # optional extra: pip install .[dask]

        with Client(scheduler) as client:
            log.info("dask cluster at %s with %d workers", scheduler, len(client.scheduler_info()["workers"]))
            with joblib.parallel_config(backend="dask"):
                yield from joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(calls)
        return
    if jobs == 1:
        yield from (execute_cell(c, str(run_dir), threads) for c in cells)
        return
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
        run_dir: the run directory; an existing one of the same suite is resumed.
        jobs: cells in parallel (loky processes, or Dask tasks at once).
        backend: "loky" (this machine) or "dask" (a Dask cluster at ``scheduler``).
        scheduler: the Dask scheduler address, e.g. tcp://127.0.0.1:8786.
        threads: torch threads per cell. The default 1 keeps ``jobs`` x ``threads`` within the
            cores when ``jobs`` = cores, and makes numbers identical for any ``jobs``: torch's
            multi-threaded reductions sum in another order, and training amplifies that.
        progress: show a progress bar on stderr.
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
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(run_dir, spec)
    write_text(run_dir / "suite.hash", spec.hash() + "\n")
    write_text(run_dir / "suite.toml", _to_toml(spec.to_dict()))

    start = time.perf_counter()
    cells = expand_cells(spec)
    todo = [c for c in cells if (read_cell_record(run_dir, c.cell_id) or {}).get("status") != "ok"]
    skipped = len(cells) - len(todo)
    if skipped:
        log.info("resuming %s: %d of %d cells already finished", run_dir, skipped, len(cells))
    failed = 0
    bar = tqdm(total=len(cells), initial=skipped, desc=spec.name, unit="cell", disable=not progress)
    with bar:
        for record in _run_parallel(todo, run_dir, jobs, threads, backend, scheduler):
            if record["status"] != "ok":
                failed += 1
                log.warning("cell %s failed: %s", record["cell_id"], record["error"])
            bar.set_postfix(failed=failed)
            bar.update()
    wall = time.perf_counter() - start
    write_tables(run_dir, spec, cells, jobs=jobs, threads_per_cell=threads, backend=backend, wall_time_s=wall)
    return RunSummary(run_dir, len(cells), skipped, len(todo) - failed, failed, wall)


def write_tables(
    run_dir: Path, spec: SuiteSpec, cells: Iterable[Cell], **run_info: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate the cell files into rows/cells tables (parquet + CSV) and write meta.json."""
    frames, records = [], []
    for cell in cells:
        record = read_cell_record(run_dir, cell.cell_id)
        if record is None:
            record = {**cell.key(), "cell_id": cell.cell_id, "status": "missing", "wall_time_s": None,
                      "params": None, "error": "not run (interrupted)", "traceback": ""}  # fmt: skip
        records.append(record)
        if record["status"] == "ok":
            frames.append(pd.read_parquet(cell_rows_path(run_dir, cell.cell_id)))
    rows = pd.concat(frames, ignore_index=True) if frames else rows_frame([])
    rows = rows.sort_values(["protocol", "task", "model", "arm", "seed", "metric", "step"], kind="stable")
    cells_table = pd.DataFrame(records, columns=CELL_COLUMNS)
    cells_table = cells_table.astype({"wall_time_s": "float64", "params": "Float64"})
    write_table(run_dir / "rows.parquet", rows.reset_index(drop=True))
    write_table(run_dir / "cells.parquet", cells_table)
    write_json(run_dir / "meta.json", run_metadata(spec, **run_info))
    return rows, cells_table


def _to_toml(data: dict[str, Any]) -> str:
    """The resolved suite as TOML (flat values first, then one table per protocol)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if v is None:
            return '"none"'
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"
