"""load_run reads the parquet tables only and refuses a directory whose files name different suites."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from suites.report.load import load_run
from tests.suites.report.synthetic_run import make_run_dir


def _error(path: Path) -> str:
    with pytest.raises(ValueError) as info:
        load_run(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


def _write_stamped(frame: pd.DataFrame, path: Path, **stamp: str) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {f"ssm_metarl.{k}".encode(): v.encode() for k, v in stamp.items()}
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), path)


def test_rows_csv_is_never_read(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)
    rows = pd.read_parquet(run / "rows.parquet")
    rows.assign(value=999.0).to_csv(run / "rows.csv", index=False)
    assert (load_run(run).rows["value"] != 999.0).all()  # the parquet table, not the edited copy
    (run / "rows.parquet").unlink()
    assert "rows.parquet missing (the report reads parquet only" in _error(run)


def test_cells_csv_is_never_read(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)
    pd.read_parquet(run / "cells.parquet").to_csv(run / "cells.csv", index=False)
    (run / "cells.parquet").unlink()
    assert "cells.parquet missing (the report reads parquet only" in _error(run)


def test_meta_of_another_suite_is_refused(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)
    meta = json.loads((run / "meta.json").read_text())
    meta["suite"]["name"] = "quick"
    (run / "meta.json").write_text(json.dumps(meta))
    message = _error(run)
    assert "meta.json suite.name says suite 'quick'" in message
    assert "rows.parquet suite column says 'synthetic'" in message


def test_rows_of_another_suite_are_refused(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)
    rows = pd.read_parquet(run / "rows.parquet")
    rows.assign(suite="quick").to_parquet(run / "rows.parquet")
    assert "rows.parquet suite column says 'quick'" in _error(run)
    mixed = rows.copy()
    mixed.loc[mixed.index[:5], "suite"] = "quick"
    mixed.to_parquet(run / "rows.parquet")
    assert "expected rows of one suite, got suites ['quick', 'synthetic']" in _error(run)


def test_stamped_tables_of_another_definition_are_refused(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)  # meta.json: suite_hash "deadbeef"
    rows = pd.read_parquet(run / "rows.parquet")
    _write_stamped(rows, run / "rows.parquet", suite="synthetic", suite_hash="deadbeef")
    assert len(load_run(run).rows) == len(rows)
    _write_stamped(rows, run / "rows.parquet", suite="synthetic", suite_hash="0123456789abcdef")
    message = _error(run)
    assert "meta.json says suite definition (hash) 'deadbeef', rows.parquet metadata says '0123456789abcdef'" in message
    _write_stamped(rows, run / "rows.parquet", suite="synthetic", suite_hash="deadbeef")
    (run / "suite.hash").write_text("0123456789abcdef\n")
    assert "suite.hash says '0123456789abcdef'" in _error(run)
