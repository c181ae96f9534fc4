"""Reading and validating a run directory (layout: results/README.md) into one :class:`Run`.

The report reads ``rows.parquet`` and ``cells.parquet`` only: the CSV copies beside them are for
people, and an edited or stale copy must never be reported. Anything unusable (a missing
directory or file, an unreadable table, a missing column, no measurement and no cell at all) is
a one-line ValueError naming the path and what is wrong; so is a directory whose files disagree
about the suite (meta.json, the suite column of rows and cells, the suite name and hash the
runner stamps on both tables, suite.hash), which would otherwise be reported under one suite's
name with another's numbers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

STAMP_PREFIX = "ssm_metarl."
"""The runner's keys in a table's parquet schema metadata (``suites.storage.METADATA_PREFIX``)."""
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


def _read_table(run_dir: Path, stem: str, columns: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The table ``<stem>.parquet`` and the suite stamp in its schema metadata ({} when none)."""
    path = run_dir / f"{stem}.parquet"
    if not path.exists():
        csv = " (the report reads parquet only; the CSV copy beside it is for people)" if (
            run_dir / f"{stem}.csv").exists() else " (not a run directory?)"  # fmt: skip
        raise ValueError(f"{run_dir}: {stem}.parquet missing{csv}")
    try:
        frame = pd.read_parquet(path)
        raw = pq.read_schema(path).metadata or {}
    except Exception as exc:  # any reader failure means a corrupt file; say which and why
        raise ValueError(f"{path}: cannot be read ({_one_line(exc)})") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    prefix = STAMP_PREFIX.encode()
    stamp = {k[len(prefix) :].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}
    return frame, stamp


def _check_one_suite(
    path: Path, meta: dict[str, Any], rows: pd.DataFrame, cells: pd.DataFrame, stamps: dict[str, dict[str, str]]
) -> None:
    """Refuse a directory whose files disagree about the suite's name or definition (hash).

    Every source that says something is compared: meta.json (``suite_name``, ``suite.name``,
    ``suite_hash``), the suite column of rows.parquet and cells.parquet, the suite name and hash
    stamped in their schema metadata, and suite.hash. Sources that are absent (older runs, runs
    written by hand) are skipped.
    """
    names: list[tuple[str, str]] = []
    hashes: list[tuple[str, str]] = []
    suite = meta.get("suite")
    if isinstance(suite, dict) and suite.get("name"):
        names.append(("meta.json suite.name", str(suite["name"])))
    if meta.get("suite_name"):
        names.append(("meta.json suite_name", str(meta["suite_name"])))
    if meta.get("suite_hash"):
        hashes.append(("meta.json", str(meta["suite_hash"])))
    for stem, frame in (("rows.parquet", rows), ("cells.parquet", cells)):
        if "suite" in frame.columns:
            values = sorted(frame["suite"].astype(str).unique())
            if len(values) > 1:
                raise ValueError(f"{path / stem}: expected rows of one suite, got suites {values}")
            names += [(f"{stem} suite column", v) for v in values]
        stamp = stamps[stem]
        if stamp.get("suite"):
            names.append((f"{stem} metadata", stamp["suite"]))
        if stamp.get("suite_hash"):
            hashes.append((f"{stem} metadata", stamp["suite_hash"]))
    hash_file = path / "suite.hash"
    if hash_file.is_file():
        hashes.append(("suite.hash", hash_file.read_text().strip()))
    for kind, found in (("suite", names), ("suite definition (hash)", hashes)):
        for source, value in found[1:]:
            if value != found[0][1]:
                raise ValueError(
                    f"{path}: files of different suites: {found[0][0]} says {kind} {found[0][1]!r}, "
                    f"{source} says {value!r}; refusing to report them as one run"
                )


def load_run(run_dir: str | Path) -> Run:
    """Load and validate a run directory.

    Args:
        run_dir: a directory holding rows.parquet, cells.parquet, meta.json (and suite.toml);
            the CSV copies are never read.

    Returns:
        The :class:`Run`; rows with a non-finite value are dropped and counted.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(
            f"{path}: expected a run directory, found {'a file' if path.exists() else 'nothing'}"
        )
    rows, rows_stamp = _read_table(path, "rows", ROW_COLUMNS)
    cells, cells_stamp = _read_table(path, "cells", CELL_COLUMNS)
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
    _check_one_suite(path, meta, rows, cells, {"rows.parquet": rows_stamp, "cells.parquet": cells_stamp})
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
