"""Atomic writes, the run-directory layout (results/README.md documents it), and the checks that
let a resume trust a finished cell.

Every file is written to a temporary name in the same folder and renamed into place, so a kill
at any moment leaves either the old file or the new one, never half of one. Each finished cell's
parquet file carries its suite hash and cell id in the schema metadata, and its JSON record
carries the same two plus the parquet file's SHA-256: ``load_cell`` accepts a cell only when all
of them agree, so a truncated, edited, foreign or unreadable cell file is run again instead of
being trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROW_COLUMNS = ["suite", "protocol", "task", "model", "arm", "seed", "metric", "step", "value"]
CELL_COLUMNS = [
    "suite", "protocol", "task", "model", "training_arm", "seed", "cell_id",
    "status", "wall_time_s", "params", "error", "traceback",
]  # fmt: skip
METADATA_PREFIX = "ssm_metarl."
"""Prefix of this project's keys in a parquet file's schema metadata (``ssm_metarl.suite_hash``...)."""


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


def write_table(path: Path, frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> None:
    """Write ``frame`` as parquet at ``path`` and as CSV beside it, each atomically.

    Args:
        path: the parquet file; the CSV copy (for people; nothing of this project reads it) goes
            beside it with the suffix ``.csv``.
        frame: the table.
        metadata: key -> value stored in the parquet schema metadata as ``ssm_metarl.<key>``
            (``read_table_metadata`` reads them back).
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        extra = {f"{METADATA_PREFIX}{k}".encode(): str(v).encode() for k, v in metadata.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    atomic_write(path, lambda p: pq.write_table(table, p))
    atomic_write(path.with_suffix(".csv"), lambda p: frame.to_csv(p, index=False))


def read_table_metadata(path: Path) -> dict[str, str]:
    """The ``ssm_metarl.*`` schema metadata of a parquet file, prefix removed ({} when none)."""
    raw = pq.read_schema(path).metadata or {}
    prefix = METADATA_PREFIX.encode()
    return {k[len(prefix) :].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a typed tidy frame (empty frames keep the columns and dtypes)."""
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    return frame.astype({"seed": "int64", "step": "int64", "value": "float64"})


def cell_rows_path(run_dir: Path, cell_id: str) -> Path:
    return run_dir / "cells" / f"{cell_id}.parquet"


def cell_record_path(run_dir: Path, cell_id: str) -> Path:
    return run_dir / "cells" / f"{cell_id}.json"


def write_cell_rows(run_dir: Path, cell_id: str, frame: pd.DataFrame, suite_hash: str) -> dict[str, Any]:
    """Write a finished cell's rows, stamped with its suite hash and cell id.

    Returns:
        What its record must carry for ``load_cell`` to accept the file: ``rows`` (the count)
        and ``rows_sha256``.
    """
    path = cell_rows_path(run_dir, cell_id)
    write_table(path, frame, {"suite_hash": suite_hash, "cell_id": cell_id})
    return {"rows": len(frame), "rows_sha256": file_sha256(path)}


@dataclasses.dataclass(frozen=True)
class StoredCell:
    """What a run directory holds for one cell.

    Attributes:
        record: its record (status ``ok`` or ``failed``) when usable; None when the cell has not
            written one or its files cannot be trusted.
        rows: the rows of an ``ok`` cell, else None.
        problem: why the files cannot be trusted, one line naming the file ("" when they can,
            or when the cell simply has not finished).
    """

    record: dict[str, Any] | None
    rows: pd.DataFrame | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.record is not None and self.record.get("status") == "ok" and self.rows is not None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def load_cell(run_dir: Path, cell_id: str, suite_hash: str) -> StoredCell:
    """A cell's record (and rows, when ok), checked against the suite hash and cell id.

    A cell with no record has not finished (a crash between its rows and its record leaves just
    the rows): ``StoredCell(None)``, no problem. A record that is unreadable, of another suite
    definition or another cell, or an ``ok`` record whose rows file is missing, unreadable,
    differs from the SHA-256 the record holds or carries another suite hash or cell id in its
    metadata: ``StoredCell(None, problem=...)``, the cell must run again.
    """
    path = cell_record_path(run_dir, cell_id)
    if not path.is_file():
        return StoredCell(None)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return StoredCell(None, problem=f"{path}: unreadable ({_one_line(err)})")
    if not isinstance(record, dict):
        return StoredCell(None, problem=f"{path}: expected a JSON object, got {type(record).__name__}")
    if record.get("suite_hash") != suite_hash:
        given = record.get("suite_hash") or "none (written before records carried one)"
        return StoredCell(None, problem=f"{path}: expected suite hash {suite_hash}, got {given}")
    if record.get("cell_id") != cell_id:
        return StoredCell(None, problem=f"{path}: expected cell id {cell_id}, got {record.get('cell_id')!r}")
    if record.get("status") != "ok":
        return StoredCell(record)
    rows_path = cell_rows_path(run_dir, cell_id)
    if not rows_path.is_file():
        return StoredCell(None, problem=f"{rows_path}: missing, though {path.name} says ok")
    try:
        digest = file_sha256(rows_path)
        if digest != record.get("rows_sha256"):
            return StoredCell(
                None, problem=f"{rows_path}: expected the content its record holds (sha256 "
                f"{str(record.get('rows_sha256'))[:12]}...), got sha256 {digest[:12]}... (truncated or changed)"
            )  # fmt: skip
        stamp = read_table_metadata(rows_path)
        rows = pd.read_parquet(rows_path)
    except Exception as err:  # any reader failure means a damaged file: name it and why
        return StoredCell(None, problem=f"{rows_path}: unreadable ({_one_line(err)})")
    if stamp.get("suite_hash") != suite_hash or stamp.get("cell_id") != cell_id:
        return StoredCell(
            None, problem=f"{rows_path}: expected suite hash {suite_hash} and cell id {cell_id}, got "
            f"{stamp.get('suite_hash')} and {stamp.get('cell_id')}"
        )  # fmt: skip
    return StoredCell(record, rows)
