"""The ``bench`` command's arguments, apart from ``suites.bench.targets`` so that building the CLI parser
(for ``list``, ``run``, ``report``) does not import torch, the models and the protocols."""

from __future__ import annotations

import argparse

HELP = "timing sweeps and complexity slopes; --targets: the speed targets"
DESCRIPTION = "Timing sweeps of a suite's [timing] table, or (--targets) the speed targets with PASS/FAIL."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``bench`` command's arguments."""
    p.add_argument("--targets", action="store_true",
                   help="measure the speed targets (PASS/FAIL per line) instead of the sweeps")  # fmt: skip
    p.add_argument("--suite", help="sweeps: the suite whose [timing] table runs (default mujoco); with --targets: "
                   "also time `run SUITE` with --jobs 1 and 2 (parallel efficiency, 180 s budget)")  # fmt: skip
    p.add_argument("--models", help="comma-separated models (default: the suite's; with --targets: every model)")
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0],
                   help="sweeps: seeds, e.g. 0,1,2 (default 0: repeats within a cell give the spread)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="sweeps: override a setting, e.g. --set timing.repeats=3 (repeatable)")  # fmt: skip
    p.add_argument("--device", choices=["cpu", "cuda"], help="where models run (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", help="sweeps: run directory (default results/bench/<timestamp>)")
    p.add_argument("--report-dir", help="sweeps: report directory (default reports/<suite>-bench/)")
    p.add_argument("--no-report", action="store_true", help="sweeps: do not build the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
