"""Reading and validating a run directory (layout: results/README.md) into one :class:`Run`.

Anything unusable (a missing directory or file, an unreadable table, a missing column, no
measurement and no cell at all) is a one-line ValueError naming the path and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROW_COLUMNS = ("suite", "protocol", "task", "model", "arm", "seed", "metric", "step", "value")
CELL_COLUMNS = (
    "protocol",
    "task",
    "model",
    "training_arm",
    "seed",
    "cell_id",
    "status",
    "wall_time_s",
    "params",
    "error",
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory, loaded.

    Attributes:
        path: the run directory.
        rows: the tidy results table (ROW_COLUMNS), non-finite values removed.
        cells: one row per cell (CELL_COLUMNS and, when written, traceback).
        meta: meta.json as a dict.
        suite_toml: suite.toml's text ("" when the file is absent).
        dropped_rows: how many rows had a non-finite value and were removed.
    """

    path: Path
    rows: pd.DataFrame
    cells: pd.DataFrame
    meta: dict[str, Any]
    suite_toml: str
    dropped_rows: int

    @property
    def suite_name(self) -> str:
        """The suite's name: meta's suite definition, else the rows' suite column."""
        suite = self.meta.get("suite")
        if isinstance(suite, dict) and suite.get("name"):
            return str(suite["name"])
        if len(self.rows):
            return str(self.rows["suite"].iloc[0])
        return str(self.cells["suite"].iloc[0]) if "suite" in self.cells else self.path.name


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _read_table(run_dir: Path, stem: str, columns: tuple[str, ...]) -> pd.DataFrame:
    parquet, csv = run_dir / f"{stem}.parquet", run_dir / f"{stem}.csv"
    path = parquet if parquet.exists() else csv
    if not path.exists():
        raise ValueError(f"{run_dir}: {stem}.parquet missing (not a run directory?)")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # any reader failure means a corrupt file; say which and why
        raise ValueError(f"{path}: cannot be read ({_one_line(exc)})") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    return frame


def load_run(run_dir: str | Path) -> Run:
    """Load and validate a run directory.

    Args:
        run_dir: a directory holding rows.parquet, cells.parquet, meta.json (and suite.toml).

    Returns:
        The :class:`Run`; rows with a non-finite value are dropped and counted.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(
            f"{path}: expected a run directory, found {'a file' if path.exists() else 'nothing'}"
        )
    rows = _read_table(path, "rows", ROW_COLUMNS)
    cells = _read_table(path, "cells", CELL_COLUMNS)
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise ValueError(f"{path}: meta.json missing (not a run directory?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path}: cannot be read ({_one_line(exc)})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if rows.empty and cells.empty:
        raise ValueError(f"{path}: empty run, no rows and no cells")
    try:
        rows = rows.astype({"seed": "int64", "step": "int64", "value": "float64"})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: rows seed/step/value not numeric ({_one_line(exc)})") from exc
    for col in ("suite", "protocol", "task", "model", "arm", "metric"):
        rows[col] = rows[col].astype(str)
    finite = np.isfinite(rows["value"].to_numpy())
    suite_toml = path / "suite.toml"
    return Run(
        path=path,
        rows=rows.loc[finite].reset_index(drop=True),
        cells=cells.reset_index(drop=True),
        meta=meta,
        suite_toml=suite_toml.read_text() if suite_toml.exists() else "",
        dropped_rows=int((~finite).sum()),
    )
