"""``ssm-metarl``: list suites, models and tasks; run a suite; build a report; benchmark.

Errors print one line (``error: ...``) and exit 2; ``DEBUG=1`` shows full tracebacks and debug
logging instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from suites.bench import args as bench_args

log = logging.getLogger("ssm_metarl")


def _debug() -> bool:
    return os.environ.get("DEBUG", "") not in ("", "0")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            return list(range(lo, hi + 1))
        return [int(v) for v in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2 or 0-4, got {text!r}") from None


def cmd_list(args: argparse.Namespace) -> int:
    """Print the built-in suites, models and tasks, one line each."""
    from models import MODELS
    from suites.spec import builtin_suites, read_suite_table
    from suites.tasks import TASKS, get_distribution

    print("suites:")
    for name in builtin_suites():
        table, _ = read_suite_table(name)
        print(f"  {name:<28} {table.get('description', '')}")
    print("models:")
    for name, cls in MODELS.items():
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<28} {doc}")
    print("tasks:")
    for name in TASKS:
        print(f"  {name:<28} {get_distribution(name).describe()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite (or resume one with --out), then build its report."""
    from suites.report import build_report
    from suites.runner import run_suite
    from suites.spec import load_suite

    spec = load_suite(
        args.suite,
        models=_csv(args.models) if args.models else None,
        tasks=_csv(args.tasks) if args.tasks else None,
        seeds=args.seeds,
        overrides=args.set,
    )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("results") / spec.name / stamp
    summary = run_suite(
        spec, run_dir, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler, threads=args.threads,
        progress=not args.quiet,
    )
    print(
        f"{spec.name}: {summary.succeeded} cells ran, {summary.skipped} already done, "
        f"{summary.failed} failed, in {summary.wall_time_s:.1f} s -> {summary.run_dir}"
    )
    if not args.no_report:
        report = build_report(run_dir, Path(args.report_dir) if args.report_dir else None)
        print(f"report: {report / 'report.html'}")
    if summary.failed:
        print(f"error: {summary.failed} cell(s) failed; see {run_dir / 'cells.csv'}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Build report.md / report.html (and tables, figures) from a run directory."""
    from suites.report import build_report

    report = build_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print(f"report: {report / 'report.html'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Timing sweeps of a suite's [timing] table, or (--targets) the speed targets (suites.bench.targets)."""
    from meta.allocator import keep_freed_memory
    from suites.bench.targets import run_bench as bench

    keep_freed_memory()  # as in every process that runs models (meta/allocator.py)
    return bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssm-metarl",
        description="Meta-RL baseline comparison: which sequence model adapts best, and at what cost.",
        epilog="DEBUG=1 shows full tracebacks and debug logging.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list suites, models and tasks", description=cmd_list.__doc__)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a suite (resume it with the same --out)", description=cmd_run.__doc__)
    p.add_argument("suite", help="built-in suite name (see `list`) or a suite TOML file")
    p.add_argument("--models", help="comma-separated models to run instead of the suite's")
    p.add_argument("--tasks", help="comma-separated tasks to keep from the suite's")
    p.add_argument("--seeds", type=_seeds, help="seeds instead of the suite's: 0,1,2 or 0-4")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cells in parallel (default: cores)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per cell (default 1: numbers identical for any --jobs)")  # fmt: skip
    p.add_argument("--out", help="run directory (default results/<suite>/<timestamp>); an existing one resumes")
    p.add_argument("--backend", default="loky", choices=["loky", "dask"], help="where cells run")
    p.add_argument("--scheduler", help="Dask scheduler address with --backend dask, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite field, e.g. --set dynamics.meta_iterations=50 (repeatable)")  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="do not build the report afterwards")
    p.add_argument("--report-dir", help="where the report goes (default reports/<suite>/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="build a report from a run directory", description=cmd_report.__doc__)
    p.add_argument("run_dir", help="a run directory written by `run`")
    p.add_argument("--out", help="report directory (default reports/<suite>/)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help=bench_args.HELP, description=bench_args.DESCRIPTION)
    bench_args.add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssm-metarl`` console script and ``python -m suites``."""
    debug = _debug()
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if debug else "%(message)s",
    )
    if not debug:
        for noisy in ("matplotlib", "PIL", "distributed", "asyncio", "fontTools"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun with the same --out to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        if debug:
            raise
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
