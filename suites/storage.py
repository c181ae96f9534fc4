"""Atomic writes and the run-directory layout (results/README.md documents it).

Every file is written to a temporary name in the same folder and renamed into place, so a kill
at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROW_COLUMNS = ["suite", "protocol", "task", "model", "arm", "seed", "metric", "step", "value"]
CELL_COLUMNS = [
    "suite", "protocol", "task", "model", "training_arm", "seed", "cell_id",
    "status", "wall_time_s", "params", "error", "traceback",
]  # fmt: skip


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as parquet at ``path`` and as CSV beside it, each atomically."""
    atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    atomic_write(path.with_suffix(".csv"), lambda p: frame.to_csv(p, index=False))


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a typed tidy frame (empty frames keep the columns and dtypes)."""
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    return frame.astype({"seed": "int64", "step": "int64", "value": "float64"})


def cell_rows_path(run_dir: Path, cell_id: str) -> Path:
    return run_dir / "cells" / f"{cell_id}.parquet"


def cell_record_path(run_dir: Path, cell_id: str) -> Path:
    return run_dir / "cells" / f"{cell_id}.json"


def read_cell_record(run_dir: Path, cell_id: str) -> dict[str, Any] | None:
    """The record of a cell that got as far as writing one (ok or failed), else None."""
    path = cell_record_path(run_dir, cell_id)
    if not path.is_file():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("status") == "ok" and not cell_rows_path(run_dir, cell_id).is_file():
        return None
    return record
