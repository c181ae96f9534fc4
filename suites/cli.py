"""``ssm-metarl``: list suites, models and tasks; run a suite; build a report; benchmark.

Errors print one line (``error: <file or option>: <field>: expected ..., got ...``) and exit 2:
bad arguments (argparse's own errors included), a bad suite (``suites.spec.load_suite``) and what
``suites.preflight`` finds before any compute (output directories, the Dask scheduler, devices,
size). An unexpected exception prints one line too and exits 1. ``DEBUG=1`` shows full
tracebacks and debug logging instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from suites.bench import args as bench_args

log = logging.getLogger("ssm_metarl")


SEED_LIMIT = 2**31
"""Seeds are ints in [0, SEED_LIMIT) (``suites.spec.SEED_LIMIT``, not imported: building the parser stays light)."""
MAX_SEEDS = 1_000_000
"""A ``--seeds`` range longer than this is refused before it is expanded."""


class UsageError(ValueError):
    """Bad command-line arguments; one line, naming the option."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors raised as one-line ``UsageError``s instead of usage text and exit."""

    def error(self, message: str) -> typing.NoReturn:
        message = " ".join(message.split())
        raise UsageError(message.removeprefix("argument "))


def _debug() -> bool:
    return os.environ.get("DEBUG", "") not in ("", "0")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _names(option: str, text: str | None) -> None:
    """Refuse an empty ``--models`` / ``--tasks`` value or an empty entry in it."""
    if text is None:
        return
    if not _csv(text):
        raise UsageError(f"{option}: expected a comma-separated list of names, got {text!r}")
    if any(not t.strip() for t in text.split(",")):
        raise UsageError(f"{option}: expected comma-separated names without empty entries, got {text!r}")


def _seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` -> seeds, each in [0, SEED_LIMIT), distinct, a range of at most MAX_SEEDS."""
    expected = f"expected seeds like 0,1,2 or 0-4 (ints in [0, {SEED_LIMIT - 1}]), got {text[:100]!r}"
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            if not 0 <= lo <= hi < SEED_LIMIT:
                raise argparse.ArgumentTypeError(expected)
            if hi - lo + 1 > MAX_SEEDS:
                raise argparse.ArgumentTypeError(f"expected a range of at most {MAX_SEEDS} seeds, got {text!r} "
                                                 f"({hi - lo + 1} seeds)")  # fmt: skip
            return list(range(lo, hi + 1))
        if not _csv(text) or any(not t.strip() for t in text.split(",")):
            raise argparse.ArgumentTypeError(expected)
        seeds = [int(v) for v in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if not all(0 <= seed < SEED_LIMIT for seed in seeds):
        raise argparse.ArgumentTypeError(expected)
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise argparse.ArgumentTypeError(f"expected distinct seeds, got {seed} twice")
        seen.add(seed)
    return seeds


def _int_in(low: int, high: int) -> typing.Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an int in [{low}, {high}], got {text[:100]!r}")
        return value

    parse.__name__ = "int"
    return parse


def _path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got ''")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"expected a path without NUL bytes, got {text[:100]!r}")
    return text


def _check_run_args(args: argparse.Namespace) -> None:
    """The ``run`` arguments that contradict each other or are empty, refused before anything loads."""
    _names("--models", args.models)
    _names("--tasks", args.tasks)
    if args.scheduler is not None and args.backend != "dask":
        raise UsageError(f"--scheduler: expected only with --backend dask, got {args.scheduler!r} with "
                         f"--backend {args.backend}")  # fmt: skip
    if args.backend == "dask":
        if not args.scheduler:
            raise UsageError("--scheduler: expected an address like tcp://host:8786 with --backend dask, got none")
        from suites.preflight import check_scheduler_address

        check_scheduler_address(args.scheduler)
    if args.no_report and args.report_dir is not None:
        raise UsageError(f"--report-dir: expected no report directory with --no-report, got {args.report_dir!r}")


def _check_report_args(args: argparse.Namespace) -> None:
    """``report RUN_DIR``: the run directory exists and is one."""
    run_dir = Path(args.run_dir)
    try:
        found, exists = run_dir.is_dir(), run_dir.exists()
    except OSError as err:  # a name too long for the file system, a permission on the way
        raise UsageError(f"run_dir {args.run_dir[:100]}: expected a run directory written by `run`, got "
                         f"{err.strerror or err}") from None  # fmt: skip
    if not found:
        what = "a file" if exists else "nothing there"
        raise UsageError(f"run_dir {args.run_dir}: expected a run directory written by `run`, got {what}")


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
    from suites.preflight import check_run
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
    report_dir = None if args.no_report else Path(args.report_dir or Path("reports") / spec.name)
    check_run(spec, run_dir, report_dir, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler, yes=args.yes)
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
    from suites.preflight import check_output_dir
    from suites.report import build_report

    if args.out:
        check_output_dir("--out", args.out)
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
    parser = ArgumentParser(
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
    p.add_argument("--jobs", type=_int_in(1, 4096), default=os.cpu_count() or 1,
                   help="cells in parallel (default: cores)")  # fmt: skip
    p.add_argument("--threads", type=_int_in(1, 1024), default=1,
                   help="torch threads per cell (default 1: numbers identical for any --jobs)")  # fmt: skip
    p.add_argument("--out", type=_path,
                   help="run directory (default results/<suite>/<timestamp>); an existing one resumes")  # fmt: skip
    p.add_argument("--backend", default="loky", choices=["loky", "dask"], help="where cells run")
    p.add_argument("--scheduler", help="Dask scheduler address with --backend dask, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite field, e.g. --set dynamics.meta_iterations=50 (repeatable)")  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="do not build the report afterwards")
    p.add_argument("--report-dir", type=_path, help="where the report goes (default reports/<suite>/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--yes", action="store_true",
                   help="run even if the run has more than 10000 cells or its --jobs cells at once would not fit "
                        "this machine's available memory (an estimate; see suites/size_estimate.py)")  # fmt: skip
    p.set_defaults(func=cmd_run, check=_check_run_args)

    p = sub.add_parser("report", help="build a report from a run directory", description=cmd_report.__doc__)
    p.add_argument("run_dir", type=_path, help="a run directory written by `run`")
    p.add_argument("--out", type=_path, help="report directory (default reports/<suite>/)")
    p.set_defaults(func=cmd_report, check=_check_report_args)

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
    try:
        args = build_parser().parse_args(argv)
        check = getattr(args, "check", None)
        if check is not None:
            check(args)
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun with the same --out to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as err:
        if debug:
            raise
        print(_one_line(err), file=sys.stderr)
        return 2
    except RecursionError as err:  # a structure nested too deeply for a check that recursed
        if debug:
            raise
        print(f"error: input nested too deeply ({err})", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line, and DEBUG=1 shows where
        if debug:
            raise
        print(f"error: unexpected {type(err).__name__}: {_one_line(err).removeprefix('error: ')} "
              f"(DEBUG=1 shows the traceback)", file=sys.stderr)  # fmt: skip
        return 1


def _one_line(err: BaseException) -> str:
    """``error: <first line of the message>`` (the exception's name when it has no message)."""
    lines = str(err).strip().splitlines()
    return f"error: {lines[0] if lines else type(err).__name__}"


if __name__ == "__main__":
    sys.exit(main())
