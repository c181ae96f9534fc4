"""The runner: end to end, resume, failures, --jobs equivalence, and the Dask backend."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from suites.cli import main
from suites.protocols import PROTOCOLS
from suites.runner import run_suite
from suites.spec import load_suite
from suites.storage import cell_record_path
from suites.validate import SpecError
from tests.suites.tiny import write_tiny_suite


def _comparable(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows without wall-clock measurements (which differ between any two runs)."""
    keep = ~rows.metric.str.startswith("time_")
    return rows[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("tiny")
    spec = load_suite(str(write_tiny_suite(folder)))
    summary = run_suite(spec, folder / "run", jobs=1, progress=False)
    assert summary.ok and summary.total == 8, summary
    run_dir = folder / "run"
    return run_dir, pd.read_parquet(run_dir / "rows.parquet"), pd.read_parquet(run_dir / "cells.parquet")


def test_end_to_end_writes_tidy_tables(tiny_run) -> None:
    run_dir, rows, cells = tiny_run
    assert list(rows.columns) == ["suite", "protocol", "task", "model", "arm", "seed", "metric", "step", "value"]
    assert (cells.status == "ok").all() and len(cells) == 8
    assert set(rows.arm) == {"maml", "pretrain", "maml+adapter"}
    q = rows[rows.metric == "query_mse"]
    assert sorted(q.step.unique()) == [0, 1, 2]
    assert set(q.arm) == {"maml", "pretrain"}
    online = rows[rows.metric == "online_mse"]
    assert sorted(online.step.unique()) == list(range(-10, 10))
    assert rows.value.notna().all()
    assert (cells.params > 0).all()
    # each trained model is stored once for the run's other cells: model x seed x training arm
    stored = sorted(p.name for p in (run_dir / "models").iterdir())
    assert len(stored) == 8 and all(name.endswith(".pt") for name in stored)
    assert {name.split("__")[2] for name in stored} == {"maml", "pretrain"}
    for name in ("rows.csv", "cells.csv", "meta.json", "suite.toml"):
        assert (run_dir / name).is_file()
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["suite_hash"] and meta["versions"]["torch"] and meta["suite"]["name"] == "tiny"


def test_resume_after_crash_equals_uninterrupted(tiny_run, tmp_path: Path) -> None:
    _, rows, _ = tiny_run
    spec = load_suite(str(write_tiny_suite(tmp_path)))
    run_dir = tmp_path / "run"
    run_suite(spec, run_dir, jobs=1, progress=False)
    # simulate a crash: two cells lost their record (one mid-write: rows there, record not)
    records = sorted((run_dir / "cells").glob("*.json"))
    records[0].unlink()
    records[3].unlink()
    (run_dir / "rows.parquet").unlink()
    summary = run_suite(spec, run_dir, jobs=1, progress=False)
    assert (summary.skipped, summary.succeeded, summary.failed) == (6, 2, 0)
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(run_dir / "rows.parquet")), _comparable(rows))


def test_changed_suite_refused_on_resume(tiny_run, tmp_path: Path) -> None:
    run_dir, _, _ = tiny_run
    changed = load_suite(str(write_tiny_suite(tmp_path, **{"meta_iterations = 3": "meta_iterations = 4"})))
    with pytest.raises(SpecError, match="holds a run of a different suite definition"):
        run_suite(changed, run_dir, jobs=1, progress=False)


def test_failing_cell_is_recorded_and_others_complete(tmp_path: Path, monkeypatch, capsys) -> None:
    real = PROTOCOLS["dynamics"]

    def flaky(cell):
        if cell.model == "gru" and cell.seed == 1 and cell.training_arm == "pretrain":
            raise RuntimeError("injected failure")
        return real.run(cell)

    monkeypatch.setitem(PROTOCOLS, "dynamics", dataclasses.replace(real, run=flaky))
    suite = write_tiny_suite(tmp_path)
    code = main(["run", str(suite), "--out", str(tmp_path / "run"), "--jobs", "1", "--quiet", "--no-report"])
    assert code == 1
    assert "1 failed" in capsys.readouterr().out
    cells = pd.read_parquet(tmp_path / "run" / "cells.parquet")
    failed = cells[cells.status == "failed"]
    assert len(failed) == 1 and failed.iloc[0].error == "RuntimeError: injected failure"
    assert "Traceback" in failed.iloc[0].traceback
    assert (cells.status == "ok").sum() == 7


def test_jobs_one_equals_jobs_two(tiny_run, tmp_path: Path) -> None:
    _, rows, _ = tiny_run
    spec = load_suite(str(write_tiny_suite(tmp_path)))
    summary = run_suite(spec, tmp_path / "run2", jobs=2, threads=1, progress=False)
    assert summary.ok
    parallel = pd.read_parquet(tmp_path / "run2" / "rows.parquet")
    pd.testing.assert_frame_equal(_comparable(parallel), _comparable(rows))


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["run", "no-such-suite", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: suite: 'no-such-suite' is neither a built-in suite") and err.count("\n") == 1
    assert main(["run", "quick", "--models", "mlp,nope", "--out", str(tmp_path / "y")]) == 2
    assert "models: unknown value 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_dask_backend_with_real_scheduler_and_two_workers(tiny_run, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    _, rows, _ = tiny_run
    spec = load_suite(str(write_tiny_suite(tmp_path)))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:  # fmt: skip
        summary = run_suite(spec, tmp_path / "run", jobs=2, backend="dask", scheduler=cluster.scheduler_address,
                            progress=False)  # fmt: skip
    assert summary.ok
    dask_rows = pd.read_parquet(tmp_path / "run" / "rows.parquet")
    pd.testing.assert_frame_equal(_comparable(dask_rows), _comparable(rows))
    assert cell_record_path(tmp_path / "run", "dynamics__pendulum-mass-length__mlp__maml__s0").is_file()


@pytest.mark.slow
def test_kill_minus_nine_then_resume_equals_uninterrupted(tiny_run, tmp_path: Path) -> None:
    """A real crash: SIGKILL the CLI mid-run, rerun with the same --out, compare the tables."""
    import os
    import signal
    import subprocess
    import sys
    import time

    _, rows, _ = tiny_run
    suite = write_tiny_suite(tmp_path)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "suites", "run", str(suite), "--out", str(run_dir), "--jobs", "1",
           "--quiet", "--no-report"]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list((run_dir / "cells").glob("*.json"))) < 3:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no cell finished in 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "rows.parquet").exists()
    done = len(list((run_dir / "cells").glob("*.json")))
    assert 3 <= done < 8
    subprocess.run(cmd, check=True)
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(run_dir / "rows.parquet")), _comparable(rows))
