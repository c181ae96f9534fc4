"""A run directory that cannot lie: stamped cell files checked on resume, a missing suite.hash,
damaged stored models, the run lock, non-finite measurements, the report's refusals, and
workers that end with the run's process.

Most tests copy one finished tiny run and damage the copy; a resume then runs again exactly the
damaged cells, and its final rows equal the undamaged run's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from suites import lock as lock_module
from suites.cli import main
from suites.lock import LOCK_NAME, RunLock, RunLockedError
from suites.protocols import PROTOCOLS
from suites.protocols.base import Measurement
from suites.report.load import load_run
from suites.runner import run_suite
from suites.spec import load_suite
from suites.storage import cell_record_path, cell_rows_path, file_sha256, read_table_metadata, write_table
from suites.validate import SpecError
from tests.suites.tiny import write_tiny_suite

MLP_MAML = "dynamics__pendulum-mass-length__mlp__maml__s0"
GRU_PRETRAIN = "dynamics__pendulum-mass-length__gru__pretrain__s1"
CHANGED = {"meta_iterations = 3": "meta_iterations = 4"}


def _comparable(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows without wall-clock measurements (which differ between any two runs)."""
    return rows[~rows.metric.str.startswith("time_")].reset_index(drop=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    """(suite file, a finished tiny run, its rows)."""
    folder = tmp_path_factory.mktemp("finished")
    suite = write_tiny_suite(folder)
    summary = run_suite(load_suite(str(suite)), folder / "run", jobs=1, progress=False)
    assert summary.ok and summary.total == 8, summary
    return suite, folder / "run", pd.read_parquet(folder / "run" / "rows.parquet")


@pytest.fixture()
def run_copy(finished, tmp_path: Path) -> Path:
    """A copy of the finished run to damage."""
    _, run_dir, _ = finished
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _resume(suite: Path, run_dir: Path, **kwargs):
    return run_suite(load_suite(str(suite)), run_dir, jobs=1, progress=False, **kwargs)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ---- what a finished cell carries


def test_cell_files_carry_suite_hash_cell_id_and_checksum(finished) -> None:
    suite, run_dir, _ = finished
    suite_hash = load_suite(str(suite)).hash()
    record = json.loads(cell_record_path(run_dir, MLP_MAML).read_text())
    rows_path = cell_rows_path(run_dir, MLP_MAML)
    assert (record["suite_hash"], record["cell_id"], record["status"]) == (suite_hash, MLP_MAML, "ok")
    assert record["rows_sha256"] == file_sha256(rows_path) and record["rows"] == len(pd.read_parquet(rows_path))
    assert read_table_metadata(rows_path) == {"suite_hash": suite_hash, "cell_id": MLP_MAML}
    for table in ("rows.parquet", "cells.parquet"):
        assert read_table_metadata(run_dir / table) == {"suite": "tiny", "suite_hash": suite_hash}
    assert not (run_dir / LOCK_NAME).exists()  # released at the end of the run


# ---- damaged, foreign or unreadable cell files: run again, named in one warning each


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_values(run_dir: Path, cell_id: str) -> None:
    path = cell_rows_path(run_dir, cell_id)
    rows = pd.read_parquet(path)
    write_table(path, rows.assign(value=999.0), read_table_metadata(path))  # stamped, but not what was measured


def _set_record(run_dir: Path, cell_id: str, **fields: object) -> None:
    path = cell_record_path(run_dir, cell_id)
    record = json.loads(path.read_text())
    record.update(fields)
    for key in [k for k, v in fields.items() if v is None]:
        record.pop(key)
    path.write_text(json.dumps(record))


def _rows_of_another_cell(run_dir: Path, cell_id: str) -> None:
    """Another cell's rows file under this cell's name, its record's checksum made to match."""
    other = cell_rows_path(run_dir, "dynamics__pendulum-mass-length__gru__maml__s0")
    target = cell_rows_path(run_dir, cell_id)
    shutil.copyfile(other, target)
    _set_record(run_dir, cell_id, rows_sha256=file_sha256(target))


DAMAGE = {
    "dynamics__pendulum-mass-length__mlp__maml__s0": (
        lambda d, c: _truncate(cell_rows_path(d, c)), ".parquet: expected the content its record holds"),
    "dynamics__pendulum-mass-length__mlp__maml__s1": (_edit_values, "(truncated or changed)"),
    "dynamics__pendulum-mass-length__mlp__pretrain__s0": (
        lambda d, c: cell_record_path(d, c).write_text('{"status": "o'), ".json: unreadable (JSONDecodeError"),
    "dynamics__pendulum-mass-length__mlp__pretrain__s1": (
        lambda d, c: _set_record(d, c, suite_hash="0123456789abcdef"), "got 0123456789abcdef"),
    "dynamics__pendulum-mass-length__gru__pretrain__s0": (
        lambda d, c: _set_record(d, c, suite_hash=None), "got none (written before records carried one)"),
    "dynamics__pendulum-mass-length__gru__pretrain__s1": (
        _rows_of_another_cell, "and cell id dynamics__pendulum-mass-length__gru__pretrain__s1, got "),
}  # fmt: skip


def test_damaged_and_foreign_cell_files_run_again(finished, run_copy: Path, caplog) -> None:
    suite, _, rows = finished
    for cell_id, (damage, _) in DAMAGE.items():
        damage(run_copy, cell_id)
    (run_copy / "rows.parquet").unlink()
    with caplog.at_level(logging.WARNING):
        summary = _resume(suite, run_copy)
    assert (summary.skipped, summary.succeeded, summary.failed) == (2, 6, 0)
    warned = _warnings(caplog)
    for cell_id, (_, says) in DAMAGE.items():
        mine = [w for w in warned if f"cells/{cell_id}." in w]
        assert len(mine) == 1 and says in mine[0] and mine[0].endswith("running the cell again"), (cell_id, warned)
        assert "\n" not in mine[0]
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(run_copy / "rows.parquet")), _comparable(rows))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = _resume(suite, run_copy)  # and nothing is distrusted any more
    assert (again.skipped, again.succeeded) == (8, 0) and _warnings(caplog) == []


def test_truncated_stored_model_is_trained_again(finished, run_copy: Path, caplog) -> None:
    suite, _, rows = finished
    (model,) = (run_copy / "models").glob("pendulum-mass-length__mlp__maml__s0__*.pt")
    _truncate(model)
    cell_record_path(run_copy, MLP_MAML).unlink()  # its cell loads (here: trains) that model
    with caplog.at_level(logging.WARNING):
        summary = _resume(suite, run_copy)
    assert (summary.skipped, summary.succeeded, summary.failed) == (7, 1, 0)
    (warned,) = [w for w in _warnings(caplog) if model.name in w]
    assert "unreadable" in warned and "trains the model again" in warned
    assert model.is_file() and model.stat().st_size > 1000  # stored again, whole
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(run_copy / "rows.parquet")), _comparable(rows))


# ---- suite.hash missing


def test_missing_suite_hash_with_the_same_suite_is_rebuilt(finished, run_copy: Path, caplog) -> None:
    suite, run_dir, _ = finished
    (run_copy / "suite.hash").unlink()
    with caplog.at_level(logging.WARNING):
        summary = _resume(suite, run_copy)
    assert (summary.skipped, summary.succeeded) == (8, 0)
    assert any("suite.hash: missing; rebuilt from meta.json" in w for w in _warnings(caplog)), _warnings(caplog)
    assert (run_copy / "suite.hash").read_text() == (run_dir / "suite.hash").read_text()


@pytest.mark.parametrize("also_deleted", [(), ("suite.toml", "meta.json")])
def test_missing_suite_hash_with_a_changed_suite_is_refused(
    run_copy: Path, tmp_path: Path, also_deleted: tuple[str, ...]
) -> None:
    for name in ("suite.hash", *also_deleted):
        (run_copy / name).unlink()
    changed = load_suite(str(write_tiny_suite(tmp_path, **CHANGED)))
    expected = r"holds a run of a different suite definition: suite\.hash is missing and "
    with pytest.raises(SpecError, match=expected) as info:
        run_suite(changed, run_copy, jobs=1, progress=False)
    assert "\n" not in str(info.value) and str(run_copy) in str(info.value)
    # the refusal wrote nothing
    assert not (run_copy / "suite.hash").exists() and not (run_copy / LOCK_NAME).exists()


# ---- the report reads rows.parquet only, and refuses mixed directories


def _report_error(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["report", str(run_dir), "--out", str(run_dir.parent / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_report_refuses_missing_rows_parquet_and_mixed_suites(finished, run_copy: Path, tmp_path: Path, capsys) -> None:
    rows = pd.read_csv(run_copy / "rows.csv")
    rows.assign(value=999.0).to_csv(run_copy / "rows.csv", index=False)
    assert (load_run(run_copy).rows.value != 999.0).all()
    (run_copy / "rows.parquet").unlink()
    err = _report_error(run_copy, capsys)
    assert f"{run_copy}: rows.parquet missing (the report reads parquet only" in err

    other = Path(shutil.copytree(finished[1], tmp_path / "other"))
    meta = json.loads((other / "meta.json").read_text())
    meta["suite_name"] = meta["suite"]["name"] = "quick"
    (other / "meta.json").write_text(json.dumps(meta))
    err = _report_error(other, capsys)
    assert "meta.json suite.name says suite 'quick', rows.parquet suite column says 'tiny'" in err

    foreign = Path(shutil.copytree(finished[1], tmp_path / "foreign"))
    table = pq.read_table(foreign / "rows.parquet")
    metadata = dict(table.schema.metadata)
    metadata[b"ssm_metarl.suite_hash"] = b"0123456789abcdef"
    pq.write_table(table.replace_schema_metadata(metadata), foreign / "rows.parquet")
    err = _report_error(foreign, capsys)
    assert "rows.parquet metadata says '0123456789abcdef'" in err


# ---- the lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_in_one_process_refuses_a_second(tmp_path: Path) -> None:
    with RunLock(tmp_path) as held:
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), platform.node())
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host {platform.node()}"):
            RunLock(tmp_path).acquire()
        assert held.held
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):
        pass


def test_second_run_on_a_held_directory_is_refused(finished, run_copy: Path, capsys) -> None:
    suite, _, _ = finished
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from suites.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
         "print('held', flush=True); time.sleep(120)", str(run_copy)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code = main(["run", str(suite), "--out", str(run_copy), "--jobs", "1", "--quiet", "--no-report"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: --out {run_copy}: expected a directory no other run is using, but pid "
                              f"{holder.pid} on host {platform.node()}")  # fmt: skip
        assert f"holds {run_copy / LOCK_NAME}; wait for it to finish or use another --out" in err
    finally:
        holder.kill()
        holder.wait()
    # its process gone, the lock is stale: the next run takes it over
    assert main(["run", str(suite), "--out", str(run_copy), "--jobs", "1", "--quiet", "--no-report"]) == 0
    assert not (run_copy / LOCK_NAME).exists()


def test_stale_lock_is_taken_over_with_a_warning(finished, run_copy: Path, caplog) -> None:
    suite, _, _ = finished
    pid = _dead_pid()
    (run_copy / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": platform.node(), "started": "then"}))
    with caplog.at_level(logging.WARNING):
        summary = _resume(suite, run_copy)
    assert summary.ok
    (warned,) = [w for w in _warnings(caplog) if LOCK_NAME in w]
    assert f"stale lock of pid {pid} on host {platform.node()} (since then)" in warned and "taking it over" in warned
    assert not (run_copy / LOCK_NAME).exists()


def test_lock_from_another_host_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(RunLockedError, match=r"cannot be checked from host .*; if that run has ended, delete"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "elsewhere.example"


def test_without_flock_the_pid_decides(tmp_path: Path, monkeypatch) -> None:
    def no_flock(fd: int, op: int) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_flock)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": platform.node()}))
    with pytest.raises(RunLockedError, match=f"pid {os.getppid()} on host"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": platform.node()}))
    with RunLock(tmp_path), pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_lock_released_on_error_and_interrupt(finished, run_copy: Path, monkeypatch, error) -> None:
    suite, _, _ = finished

    def boom(*args, **kwargs):
        raise error("injected")

    monkeypatch.setattr("suites.runner.write_tables", boom)
    with pytest.raises(error):
        _resume(suite, run_copy)
    assert not (run_copy / LOCK_NAME).exists()


# ---- non-finite measurements


def test_non_finite_measurement_fails_its_cell(finished, run_copy: Path, monkeypatch) -> None:
    suite, _, _ = finished
    real = PROTOCOLS["dynamics"]

    def nan_for_one(cell):
        out = real.run(cell)
        if cell.cell_id == GRU_PRETRAIN:
            out = [m._replace(value=float("nan")) if m.metric == "query_mse" and m.step == 2 else m for m in out]
            out.append(Measurement("pretrain", "meta_train_loss", 7, float("inf")))
        return out

    monkeypatch.setitem(PROTOCOLS, "dynamics", dataclasses.replace(real, run=nan_for_one))
    cell_record_path(run_copy, GRU_PRETRAIN).unlink()
    summary = _resume(suite, run_copy)
    assert (summary.succeeded, summary.failed) == (0, 1)
    cells = pd.read_parquet(run_copy / "cells.parquet").set_index("cell_id")
    bad = cells.loc[GRU_PRETRAIN]
    assert bad.status == "failed"
    assert bad.error == ("NonFiniteMeasurementError: non-finite measurement: metric 'query_mse', arm 'pretrain', "
                         "step 2 is nan (2 of ")  + bad.error.split("(2 of ")[1]  # fmt: skip
    assert "metric 'meta_train_loss', arm 'pretrain', step 7: inf" in bad.traceback
    assert (cells.drop(GRU_PRETRAIN).status == "ok").all()
    rows = pd.read_parquet(run_copy / "rows.parquet")
    assert not ((rows.model == "gru") & (rows.seed == 1) & (rows.arm == "pretrain")).any()


# ---- file-system errors name --out


def test_out_that_is_a_file_is_one_line(finished, tmp_path: Path, capsys) -> None:
    suite, _, _ = finished
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(["run", str(suite), "--out", str(target), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {target}: expected a directory (new, or a run to resume), got a file\n"


def test_unwritable_out_is_one_line(finished, tmp_path: Path, monkeypatch, capsys) -> None:
    suite, _, _ = finished
    run_dir = tmp_path / "run"

    def denied(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("suites.runner.write_text", denied)  # as a read-only --out would (root writes anywhere)
    assert main(["run", str(suite), "--out", str(run_dir), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {run_dir}: expected a writable run directory, got Permission denied on "
                   f"{run_dir / 'suite.hash'}\n")  # fmt: skip
    assert not (run_dir / LOCK_NAME).exists()


# ---- real processes


def _cli(suite: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "suites", "run", str(suite), "--out", str(run_dir), "--quiet", "--no-report", *extra]


def _children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_kill_minus_nine_with_two_jobs_leaves_no_worker(finished, tmp_path: Path) -> None:
    suite, _, rows = finished
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cli(suite, run_dir, "--jobs", "2"), start_new_session=True)
    deadline = time.monotonic() + 300
    workers: list[int] = []
    while len(workers) < 2 or not list((run_dir / "cells").glob("*.json")):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no cell finished in 300 s"
        time.sleep(0.05)
        workers = [w for w in _children(proc.pid) if "loky" in Path(f"/proc/{w}/cmdline").read_text()]
    os.kill(proc.pid, signal.SIGKILL)  # the CLI alone, as a crash would: its workers are orphaned
    proc.wait()
    killed = time.monotonic()
    while any(lock_module.pid_alive(w) for w in workers) and time.monotonic() - killed < 10:
        time.sleep(0.1)
    alive = [w for w in workers if lock_module.pid_alive(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} still alive {time.monotonic() - killed:.1f} s after kill -9 of the run"
    assert time.monotonic() - killed < 5
    # the dead run's lock is stale: a resume takes it over and finishes like an uninterrupted run
    subprocess.run(_cli(suite, run_dir, "--jobs", "2"), check=True)
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(run_dir / "rows.parquet")), _comparable(rows))


@pytest.mark.slow
def test_two_runs_at_once_on_one_directory(finished, tmp_path: Path) -> None:
    suite, _, rows = finished
    run_dir = tmp_path / "run"
    procs = [subprocess.Popen(_cli(suite, run_dir, "--jobs", "1"), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    (refused,) = [err for code, err in results if code == 2]
    assert "expected a directory no other run is using, but pid " in refused, refused
    assert "run.lock; wait for it to finish or use another --out" in refused
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(run_dir / "rows.parquet")), _comparable(rows))
