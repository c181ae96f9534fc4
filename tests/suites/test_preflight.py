"""Checks before any compute: output directories, the Dask scheduler, devices, size; and the CLI's
argument checks and one-line errors (suites.preflight, suites.cli)."""

from __future__ import annotations

import os
import re
import sys
from collections import namedtuple
from pathlib import Path

import pytest

import suites.preflight as preflight
import suites.size_estimate as size_estimate
from suites.cli import main
from suites.preflight import (
    PreflightError,
    check_devices,
    check_output_dir,
    check_run,
    check_scheduler,
    check_scheduler_address,
)
from suites.size_estimate import MAX_CELLS, check_size, estimate
from suites.spec import load_suite


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch) -> None:
    monkeypatch.delenv("DEBUG", raising=False)


# ---- output directories


def test_output_dir_that_may_be_created_passes_and_creates_nothing(tmp_path: Path) -> None:
    check_output_dir("--out", tmp_path / "a" / "b" / "run")
    check_output_dir("--out", tmp_path)  # an existing directory: a run to resume
    assert list(tmp_path.iterdir()) == []  # the probe directory is gone, nothing else was made


def test_output_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    with pytest.raises(PreflightError, match=rf"^--out {target}: expected a directory \(new, or a run to resume\), "
                                             r"got a file$"):  # fmt: skip
        check_output_dir("--out", target, resumable=True)
    with pytest.raises(PreflightError, match=rf"^--report-dir {target}: expected a directory, got a file$"):
        check_output_dir("--report-dir", target)


def test_output_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "deeper" / "run"
    with pytest.raises(PreflightError, match=rf"^--out {target}: expected a directory path, got {tmp_path / 'afile'}, "
                                             r"which is not a directory$"):  # fmt: skip
        check_output_dir("--out", target)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_output_dir_in_proc() -> None:
    with pytest.raises(PreflightError, match=r"^--out /proc/ssm-metarl-run: expected a writable directory, got .* "
                                             r"on /proc$"):  # fmt: skip
        check_output_dir("--out", "/proc/ssm-metarl-run")


def test_output_dir_not_writable(tmp_path: Path, monkeypatch) -> None:
    def denied(**kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(preflight.tempfile, "mkdtemp", denied)  # as a read-only directory would (root writes anywhere)
    with pytest.raises(PreflightError, match=rf"^--out {tmp_path / 'run'}: expected a writable directory, got "
                                             rf"Permission denied on {tmp_path}$"):  # fmt: skip
        check_output_dir("--out", tmp_path / "run")


def test_output_dir_on_a_full_file_system(tmp_path: Path, monkeypatch) -> None:
    Stat = namedtuple("Stat", "f_bavail f_frsize")
    monkeypatch.setattr(preflight.os, "statvfs", lambda path: Stat(f_bavail=100, f_frsize=4096))
    with pytest.raises(PreflightError, match=rf"^--out {tmp_path / 'run'}: expected at least 16 MiB free on "
                                             rf"{tmp_path}, got 0.4 MiB$"):  # fmt: skip
        check_output_dir("--out", tmp_path / "run")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", r"^--out: expected a directory path, got ''$"),
        ("a\x00b", r"^--out 'a\\x00b': expected a path without NUL bytes$"),
        ("x" * 300, r"^--out x{80}\.\.\.: expected names of at most 255 bytes between slashes, got one of 300 bytes$"),
    ],
)
def test_output_dir_bad_paths(path: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PreflightError, match=message):
        check_output_dir("--out", path)


# ---- the Dask scheduler


@pytest.mark.parametrize(
    "address", ["tcp://127.0.0.1:8786", "127.0.0.1:8786", "tls://scheduler.example.org:8786", "tcp://[::1]:8786",
                "scheduler:8786", "ws://host-1.cluster:443", "inproc://10.0.0.1/123/1"],
)  # fmt: skip
def test_scheduler_addresses_that_look_right(address: str) -> None:
    assert check_scheduler_address(address) is None  # no PreflightError


@pytest.mark.parametrize(
    "address", ["garbage!", "garbage", "tcp://scheduler", "", "tcp://host:99999", "tcp://host:0", "tcp://a b:1",
                "http//x:1", "tcp://", ":8786", "tcp://host:port", "-host:1"],
)  # fmt: skip
def test_scheduler_addresses_refused(address: str) -> None:
    with pytest.raises(PreflightError, match=rf"^--scheduler: expected an address like tcp://host:8786, got "
                                             rf"{re.escape(repr(address))}$"):  # fmt: skip
        check_scheduler_address(address)


def test_unreachable_scheduler_is_refused_within_the_timeout(monkeypatch) -> None:
    pytest.importorskip("distributed")

    async def refused(address: str, timeout: float) -> dict:
        raise OSError(f"Timed out trying to connect to {address} after {timeout} s")

    monkeypatch.setattr(preflight, "_identity", refused)
    with pytest.raises(PreflightError, match=r"^--scheduler tcp://10\.0\.0\.5:8786: expected a Dask scheduler "
                                             r"answering within 0\.5 s, got OSError: Timed out trying to connect to "
                                             r"tcp://10\.0\.0\.5:8786 after 0\.5 s$"):  # fmt: skip
        check_scheduler("tcp://10.0.0.5:8786", timeout=0.5)


def test_an_answer_that_is_not_a_scheduler_is_refused(monkeypatch) -> None:
    pytest.importorskip("distributed")

    async def worker(address: str, timeout: float) -> dict:
        return {"type": "Worker", "id": "w"}

    monkeypatch.setattr(preflight, "_identity", worker)
    with pytest.raises(PreflightError, match=r"^--scheduler tcp://h:1: expected a Dask scheduler, got a 'Worker' "
                                             r"answer$"):  # fmt: skip
        check_scheduler("tcp://h:1", timeout=0.5)


def test_a_real_scheduler_answers_with_its_workers() -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:  # fmt: skip
        assert check_scheduler(cluster.scheduler_address, timeout=5) == 0


def test_nothing_listening_is_refused_quickly() -> None:
    """A port nothing listens on: refused in about the timeout, before any run directory exists."""
    pytest.importorskip("distributed")
    import socket
    import time

    with socket.socket() as s:  # a free port, closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(PreflightError, match=rf"^--scheduler tcp://127\.0\.0\.1:{port}: expected a Dask scheduler "
                                             r"answering within 0\.5 s, got "):  # fmt: skip
        check_scheduler(f"tcp://127.0.0.1:{port}", timeout=0.5)
    assert time.perf_counter() - start < 5


# ---- devices and size


def test_cuda_timing_without_cuda_is_refused_for_local_runs(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = load_suite("quick", overrides=["timing.device=cuda"])
    expected = ("quick.toml: timing.device: expected a visible CUDA device for 'cuda', got none "
                "(torch.cuda.is_available() is False)")
    with pytest.raises(PreflightError, match=re.escape(expected) + "$"):
        check_devices(spec, "loky")
    check_devices(spec, "dask")  # the cluster's workers are not this machine


def test_estimates_of_the_builtin_suites() -> None:
    quick = {e.protocol: e for e in estimate(load_suite("quick"))}
    assert {p: e.cells for p, e in quick.items()} == {"dynamics": 36, "mpc": 18, "policy": 36, "timing": 18}
    assert all(0.3 * 2**30 < e.bytes_per_cell < 1.0 * 2**30 for e in quick.values())
    mujoco = {e.protocol: e for e in estimate(load_suite("mujoco"))}
    assert mujoco["policy"].bytes_per_cell > mujoco["dynamics"].bytes_per_cell > quick["dynamics"].bytes_per_cell
    longer = estimate(load_suite("quick", overrides=["dynamics.horizon=1000", "dynamics.sequence_length=250"]))
    assert longer[0].bytes_per_cell > quick["dynamics"].bytes_per_cell


def test_too_many_cells_are_refused() -> None:
    spec = load_suite("quick", seeds=list(range(300)))  # 36 cells per seed
    with pytest.raises(PreflightError, match=rf"^suite quick: cells: expected at most {MAX_CELLS} \(or pass --yes\), "
                                             r"got 10800 \(300 seeds x 36 cells per seed\)$"):  # fmt: skip
        check_size(spec, 1, "loky")


def test_a_cell_larger_than_memory_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(size_estimate, "available_memory", lambda: 2**30)
    spec = load_suite("quick", overrides=["dynamics.horizon=20000"])
    with pytest.raises(PreflightError, match=r"quick\.toml: dynamics: expected a cell to fit in the 1\.0 GB of memory "
                                             r"available, got an estimated \d+\.\d GB per cell \(collected data about "
                                             r"\d+\.\d GB\); pass --yes to run anyway$"):  # fmt: skip
        check_size(spec, 1, "loky")


def test_jobs_whose_cells_together_exceed_memory_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(size_estimate, "available_memory", lambda: 3 * 2**30)
    spec = load_suite("quick")
    check_size(spec, 4, "loky")  # 4 x about 0.5 GB
    with pytest.raises(PreflightError, match=r"^--jobs 16: expected 16 cells at once to fit in the 3\.0 GB of memory "
                                             r"available, got an estimated \d+\.\d GB \(\w+ cells about 0\.\d GB "
                                             r"each\); lower --jobs or pass --yes$"):  # fmt: skip
        check_size(spec, 16, "loky")
    check_size(spec, 16, "dask")  # the workers' memory, not this machine's
    check_run(spec, tmp_path / "run", None, jobs=16, backend="loky", scheduler=None, yes=True)  # --yes


# ---- the command line


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    return captured.err.rstrip("\n").removeprefix("error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", ""], "--models: expected a comma-separated list of names, got ''"),
        (["--models", "mlp,"], "--models: expected comma-separated names without empty entries, got 'mlp,'"),
        (["--models", "mlp,mlp"], "--models: expected distinct values, got 'mlp' twice"),
        (["--tasks", ""], "--tasks: expected a comma-separated list of names, got ''"),
        (["--tasks", "point-nav-2d,point-nav-2d"], "--tasks: expected distinct values, got 'point-nav-2d' twice"),
        (["--seeds", ""], "--seeds: expected seeds like 0,1,2 or 0-4 (ints in [0, 2147483647]), got ''"),
        (["--seeds", "2147483648"],
         "--seeds: expected seeds like 0,1,2 or 0-4 (ints in [0, 2147483647]), got '2147483648'"),
        (["--seeds", "0,0"], "--seeds: expected distinct seeds, got 0 twice"),
        (["--seeds", "0-2000000"],
         "--seeds: expected a range of at most 1000000 seeds, got '0-2000000' (2000001 seeds)"),
        (["--seeds", "0-100000"],
         f"suite quick: cells: expected at most {MAX_CELLS} (or pass --yes), got 3600036 (100001 seeds x 36 cells per "
         "seed)"),
        (["--jobs", "0"], "--jobs: expected an int in [1, 4096], got '0'"),
        (["--threads", "0"], "--threads: expected an int in [1, 1024], got '0'"),
        (["--report-dir", ""], "--report-dir: expected a path, got ''"),
        (["--report-dir", "r", "--no-report"], "--report-dir: expected no report directory with --no-report, got 'r'"),
        (["--scheduler", "tcp://h:8786"],
         "--scheduler: expected only with --backend dask, got 'tcp://h:8786' with --backend loky"),
        (["--backend", "dask"], "--scheduler: expected an address like tcp://host:8786 with --backend dask, got none"),
        (["--backend", "dask", "--scheduler", "garbage!"],
         "--scheduler: expected an address like tcp://host:8786, got 'garbage!'"),
        (["--backend", "ray"], "--backend: invalid choice: 'ray' (choose from 'loky', 'dask')"),
        (["--colour"], "unrecognized arguments: --colour"),
        (["--set", "dynamics.inner_lr=inf"], "quick.toml: dynamics.inner_lr: expected a finite number, got inf"),
    ],
)  # fmt: skip
def test_run_arguments_refused_in_one_line(args: list[str], message: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("suites.runner.run_suite", _no_compute)
    err = _error(["run", "quick", "--out", str(tmp_path / "out"), *args], capsys)
    assert err.endswith(message), err
    assert list(tmp_path.iterdir()) == []  # no run directory, no report directory


def _no_compute(*args: object, **kwargs: object) -> None:
    raise AssertionError("compute started")


def test_out_arguments_refused_before_the_run_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("suites.runner.run_suite", _no_compute)
    (tmp_path / "afile").write_text("x")
    assert _error(["run", "quick", "--out", ""], capsys) == "--out: expected a path, got ''"
    under = tmp_path / "afile" / "run"
    assert _error(["run", "quick", "--out", str(under), "--no-report"], capsys) == (
        f"--out {under}: expected a directory path, got {tmp_path / 'afile'}, which is not a directory"
    )
    report = tmp_path / "afile" / "report"
    assert _error(["run", "quick", "--out", str(tmp_path / "run"), "--report-dir", str(report)], capsys) == (
        f"--report-dir {report}: expected a directory path, got {tmp_path / 'afile'}, which is not a directory"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_report_arguments(tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    missing = tmp_path / "nope"
    assert _error(["report", str(missing)], capsys) == (
        f"run_dir {missing}: expected a run directory written by `run`, got nothing there"
    )
    assert _error(["report", str(tmp_path / "afile")], capsys).endswith("expected a run directory written by `run`, "
                                                                          "got a file")  # fmt: skip
    assert _error(["report", ""], capsys) == "run_dir: expected a path, got ''"
    under = tmp_path / "afile" / "r"
    assert _error(["report", str(tmp_path), "--out", str(under)], capsys) == (
        f"--out {under}: expected a directory path, got {tmp_path / 'afile'}, which is not a directory"
    )


def test_yes_lets_a_large_run_start(tmp_path: Path, monkeypatch, capsys) -> None:
    started = []
    monkeypatch.setattr("suites.runner.run_suite", lambda spec, *a, **k: started.append(len(spec.seeds)) or 1 / 0)
    assert main(["run", "quick", "--seeds", "0-300", "--out", str(tmp_path / "run"), "--no-report"]) == 2
    assert "cells: expected at most 10000" in capsys.readouterr().err and not started
    code = main(["run", "quick", "--seeds", "0-300", "--out", str(tmp_path / "run"), "--no-report", "--yes"])
    assert started == [301]
    assert code == 1  # the fake runner's ZeroDivisionError: one line, exit 1
    err = capsys.readouterr().err
    assert err == "error: unexpected ZeroDivisionError: division by zero (DEBUG=1 shows the traceback)\n"


def test_the_cli_and_the_suite_files_take_the_same_seeds() -> None:
    import suites.cli
    import suites.spec

    assert suites.cli.SEED_LIMIT == suites.spec.SEED_LIMIT == 2**31


def test_debug_shows_the_traceback(monkeypatch) -> None:
    monkeypatch.setenv("DEBUG", "1")
    with pytest.raises(ValueError, match="--jobs"):
        main(["run", "quick", "--jobs", "0"])


def test_argparse_errors_are_one_line(capsys) -> None:
    assert _error([], capsys) == "the following arguments are required: COMMAND"
    assert _error(["launch"], capsys) == (
        "COMMAND: invalid choice: 'launch' (choose from 'list', 'run', 'report', 'bench')"
    )
    assert _error(["run"], capsys) == "the following arguments are required: suite"


@pytest.mark.slow
def test_a_real_process_prints_one_line(tmp_path: Path) -> None:
    """The console script in a real process: one stderr line, exit 2, no run directory."""
    import subprocess

    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = \xff\n")
    for args in (["run", str(bad)], ["run", "quick", "--set", "policy.init_std=inf"], ["run", "quick", "--jobs", "0"]):
        proc = subprocess.run([sys.executable, "-m", "suites", *args], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "DEBUG": ""}, timeout=120)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]
