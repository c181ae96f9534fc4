"""Malformed suites and command lines never start compute: one line on stderr, exit 2.

Hundreds of inputs: every field of the built-in quick suite (and every settings field of its
protocols) mutated to a bad type, inf, NaN, a negative, zero, a huge value, an empty value or
duplicates; cross-field violations; bad suite names; deep nesting; bad encodings and files; bad
``--set`` overrides; malformed command lines. Each goes through ``suites.cli.main`` in-process
with the compute entry points patched to fail, in a fresh working directory, and must give exit
code 2, exactly one stderr line (log records count as lines) starting with ``error:``, no
traceback, no compute and nothing created (no results/, reports/ or --out directory).

``python tests/suites/test_inputs_fuzz.py`` runs the same inputs and prints the counts (inputs
tried, clean errors, tracebacks, silent accepts, other) and every input that was not clean.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import sys
import tempfile
import tomllib
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

INF, NAN = math.inf, math.nan
ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "suites" / "defs" / "quick.toml"


class ComputeReached(BaseException):
    """Raised by the patched compute entry points (a BaseException: main's handlers never catch it)."""


# ---- a small TOML writer (tomllib reads only)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def toml_text(table: dict[str, Any]) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for name, sub in table.items():
        if isinstance(sub, dict):
            lines += ["", f"[{json.dumps(name)}]"] + [f"{json.dumps(k)} = {toml_value(v)}" for k, v in sub.items()]
    return "\n".join(lines) + "\n"


# ---- the inputs


@dataclasses.dataclass(frozen=True)
class Case:
    """One malformed input.

    Attributes:
        id: a short name.
        argv: the command line; "{suite}" is replaced by the written suite file, "{tmp}" by the
            working directory.
        suite: the suite file's content (bytes), or None to write none.
    """

    id: str
    argv: tuple[str, ...]
    suite: bytes | None = None


def _quick() -> dict[str, Any]:
    return tomllib.loads(QUICK.read_text())


def _suite_case(id_: str, table: dict[str, Any], *extra: str) -> Case:
    return Case(id_, ("run", "{suite}", "--out", "{tmp}/out", "--no-report", "--quiet", *extra),
                toml_text(table).encode())  # fmt: skip


def _raw_case(id_: str, data: bytes) -> Case:
    return Case(id_, ("run", "{suite}", "--out", "{tmp}/out", "--no-report", "--quiet"), data)


ZERO_OK = {("policy", "horizon"), ("policy", "eval_inner_steps"), ("timing", "warmup")}
"""Fields where 0 is valid (policy horizon 0: the task's own; no untimed warmup)."""


def _bad_values(protocol: str, field: str, tp: Any) -> list[tuple[str, Any]]:
    """Values invalid for a field of annotation ``tp`` whatever the other fields hold."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        if args[0] is str:  # collect_tasks
            return [("unknown", ["nope"]), ("dup", ["pendulum-mass-length"] * 2), ("int", [1]),
                    ("string", "pendulum-mass-length"), ("nested", [[]]), ("table", {"a": 1})]  # fmt: skip
        out = [("empty", []), ("string", "x"), ("dup", [8, 8, 16]), ("negative", [-1, 64]), ("float", [1.5, 64]),
               ("nested", [[1], 64]), ("huge", [10**12, 64]), ("inf", [INF, 64]), ("nan", [NAN, 64]),
               ("bool", [True, 64]), ("table", {"a": 1})]  # fmt: skip
        if field != "steps_taken":
            out.append(("zero", [0, 64]))
        return out
    if tp in (float, float | None):
        out = [("string", "x"), ("bool", True), ("list", [1.0]), ("table", {"a": 1.0}), ("inf", INF),
               ("-inf", -INF), ("nan", NAN), ("negative", -1.0), ("huge", 1e308), ("huge-int", 10**400)]  # fmt: skip
        if field != "gamma":
            out.append(("zero", 0.0))
        return out
    if tp is int:
        out = [("string", "x"), ("bool", True), ("float", 1.5), ("list", [1]), ("table", {"a": 1}), ("inf", INF),
               ("nan", NAN), ("negative", -1), ("huge", 2**63 - 1), ("beyond-int64", 10**30)]  # fmt: skip
        if (protocol, field) not in ZERO_OK:
            out.append(("zero", 0))
        return out
    if tp is str:
        return [("int", 1), ("bool", True), ("empty", ""), ("unknown", "nope"), ("list", ["sgd"])]
    if tp is bool:
        return [("int", 1), ("string", "yes"), ("float", 0.0), ("list", [True])]
    raise AssertionError(f"no mutations for {protocol}.{field}: {tp}")


def field_cases() -> list[Case]:
    """Every settings field of every protocol of the quick suite, set to each bad value."""
    from suites.protocols import PROTOCOLS

    cases = []
    for protocol in ("dynamics", "mpc", "policy", "timing"):
        hints = typing.get_type_hints(PROTOCOLS[protocol].settings_class)
        for field, tp in hints.items():
            for label, value in _bad_values(protocol, field, tp):
                table = _quick()
                table[protocol][field] = value
                cases.append(_suite_case(f"{protocol}.{field}={label}", table))
    return cases


def top_level_cases() -> list[Case]:
    values: dict[str, list[tuple[str, Any]]] = {
        "name": [("dot", "."), ("dotdot", ".."), ("slash", "a/b"), ("newline", "a\nb"), ("nul", "a\x00b"),
                 ("space", " "), ("long", "x" * 300), ("empty", ""), ("dash-first", "-x"), ("hidden", ".x"),
                 ("non-ascii", "ä"), ("int", 1), ("list", ["quick"]), ("inner-space", "a b"),
                 ("backslash", "a\\b"), ("tab", "a\tb")],
        "description": [("int", 1), ("newline", "two\nlines"), ("long", "x" * 600), ("list", ["d"]),
                        ("control", "a\x1bb")],
        "models": [("empty", []), ("dup", ["mlp", "mlp"]), ("unknown", ["nope"]), ("string", "mlp"),
                   ("int", [1]), ("nested", [["mlp"]]), ("empty-name", [""]), ("table", {"a": 1}),
                   ("case", ["MLP"])],
        "seeds": [("empty", []), ("dup", [0, 0]), ("negative", [-1]), ("2**31", [2**31]), ("int64", [2**63 - 1]),
                  ("beyond-int64", [10**30]), ("float", [1.5]), ("string", ["0"]), ("scalar", "0"),
                  ("bool", [True]), ("nested", [[0]]), ("inf", [INF]), ("table", {"a": 0})],
        "param_budget": [("zero", 0), ("negative", -1), ("small", 999), ("large", 10**7 + 1), ("float", 1.5),
                         ("string", "x"), ("bool", True), ("inf", INF), ("nan", NAN), ("list", [20000])],
    }  # fmt: skip
    cases = []
    for field, bad in values.items():
        for label, value in bad:
            table = _quick()
            table[field] = value
            cases.append(_suite_case(f"top.{field}={label}", table))
    for field in ("name", "models", "seeds", "param_budget"):
        table = _quick()
        del table[field]
        cases.append(_suite_case(f"top.{field}=missing", table))
    table = _quick()
    table["colour"] = "red"
    cases.append(_suite_case("top.unknown-field", table))
    table = _quick()
    table["dynamics"] = 3
    cases.append(_suite_case("top.protocol-as-scalar", table))
    table = _quick()
    table["nonsense"] = {"a": 1}
    cases.append(_suite_case("top.unknown-protocol", table))
    table = {k: v for k, v in _quick().items() if not isinstance(v, dict)}
    cases.append(_suite_case("top.no-protocol", table))
    return cases


def table_cases() -> list[Case]:
    """tasks and arms of each protocol table; unknown and nested fields."""
    cases = []
    tasks = {"dynamics": "pendulum-mass-length", "mpc": "pendulum-mass-length", "policy": "point-nav-2d"}
    wrong_family = {"mpc": "point-nav-2d", "policy": "pendulum-mass-length"}
    for protocol, task in tasks.items():
        bad: list[tuple[str, Any]] = [("empty", []), ("unknown", ["nope"]), ("dup", [task, task]), ("int", [1]),
                                      ("string", task), ("nested", [[task]]), ("table", {"a": task})]  # fmt: skip
        if protocol in wrong_family:
            bad.append(("wrong-family", [wrong_family[protocol]]))
        for label, value in bad:
            table = _quick()
            table[protocol]["tasks"] = value
            cases.append(_suite_case(f"{protocol}.tasks={label}", table))
    table = _quick()
    table["timing"]["tasks"] = ["pendulum-mass-length"]
    cases.append(_suite_case("timing.tasks=any", table))
    for protocol in ("dynamics", "mpc", "policy", "timing"):
        arm = {"dynamics": "maml", "mpc": "maml", "policy": "maml", "timing": "timing"}[protocol]
        for label, value in [("empty", []), ("unknown", ["nope"]), ("dup", [arm, arm]), ("int", [1]),
                             ("string", arm), ("nested", [[arm]])]:  # fmt: skip
            table = _quick()
            table[protocol]["arms"] = value
            cases.append(_suite_case(f"{protocol}.arms={label}", table))
        table = _quick()
        table[protocol]["meta_itterations"] = 3
        cases.append(_suite_case(f"{protocol}.unknown-field", table))
        table = _quick()
        table[protocol]["sub"] = {"a": 1}
        cases.append(_suite_case(f"{protocol}.sub-table", table))
    return cases


def cross_field_cases() -> list[Case]:
    """Fields valid alone that contradict another field, or the data they produce."""
    changes: list[tuple[str, str, dict[str, Any]]] = [
        # quick: 4 episodes of 100 steps, 2 support; windows of 25 steps: 8 support and 8 query windows per task
        ("dynamics", "support-episodes-all", {"support_episodes": 4}),
        ("dynamics", "support-episodes-more", {"support_episodes": 5}),
        ("dynamics", "sequence-longer-than-horizon", {"sequence_length": 101}),
        ("dynamics", "support-windows-above-data", {"support_windows": 9}),
        ("dynamics", "query-windows-above-data", {"query_windows": 9}),
        ("dynamics", "windows-after-longer-sequences", {"sequence_length": 60}),
        ("dynamics", "meta-batch-above-train-tasks", {"meta_batch": 33}),
        ("dynamics", "switch-at-stream-end", {"switch_at": 200}),
        ("dynamics", "adapter-window-above-stream", {"adapter_window": 201}),
        ("dynamics", "test-tasks-above-pool", {"test_tasks": 101}),
        ("mpc", "support-episodes-all", {"support_episodes": 4}),
        ("mpc", "sequence-longer-than-horizon", {"sequence_length": 101}),
        ("mpc", "support-windows-above-data", {"support_windows": 9}),
        ("mpc", "query-windows-above-data", {"query_windows": 9}),
        ("mpc", "adapt-window-above-episode", {"adapt_window": 101}),
        ("mpc", "adapt-every-above-episode", {"adapt_every": 101}),
        ("mpc", "adapter-every-above-episode", {"adapter_every": 101}),
        ("mpc", "elites-above-candidates", {"elites": 49}),
        ("mpc", "oracle-without-query-episodes", {"arms": ["maml", "oracle"], "oracle_episodes": 2}),
        ("mpc", "oracle-query-windows-above-data", {"arms": ["oracle"], "oracle_episodes": 3, "query_windows": 5}),
        ("mpc", "test-tasks-above-pool", {"test_tasks": 101}),
        ("policy", "test-tasks-above-pool", {"test_tasks": 101}),
        ("policy", "init-std-tiny", {"init_std": 1e-30}),
        ("policy", "inner-steps-above-3", {"inner_steps": 4}),
        ("timing", "seq-lengths-one-distinct", {"seq_lengths": [64, 64]}),
        ("timing", "unknown-collect-task", {"collect_tasks": ["nope"]}),
        ("timing", "collect-task-as-protocol-task", {"collect_tasks": ["timing"]}),
    ]
    cases = []
    for protocol, label, change in changes:
        table = _quick()
        table[protocol].update(change)
        cases.append(_suite_case(f"cross.{protocol}.{label}", table))
    import torch

    if not torch.cuda.is_available():  # on a machine with CUDA the setting is valid
        table = _quick()
        table["timing"]["device"] = "cuda"
        cases.append(_suite_case("cross.timing.cuda-without-cuda", table))
    return cases


def size_cases() -> list[Case]:
    """Valid fields whose product would not fit this machine or is too many cells."""
    cases = []
    table = _quick()
    table["dynamics"].update(horizon=1_000_000, train_tasks=10_000)
    cases.append(_suite_case("size.dynamics-data", table))
    table = _quick()
    table["timing"].update(seq_lengths=[16, 1_000_000], batch_size=100_000)
    cases.append(_suite_case("size.timing-sweep", table))
    table = _quick()
    table["policy"].update(meta_batch=100_000, episodes_per_task=100_000, horizon=10_000)
    cases.append(_suite_case("size.policy-rollouts", table))
    table = _quick()
    table["seeds"] = list(range(20_000))
    cases.append(_suite_case("size.cells-from-file", table))
    cases.append(Case("size.cells-from-cli", ("run", "quick", "--seeds", "0-100000", "--out", "{tmp}/out",
                                                "--no-report")))  # fmt: skip
    cases.append(Case("size.jobs-times-memory", ("run", "mujoco", "--jobs", "4096", "--out", "{tmp}/out",
                                                  "--no-report")))  # fmt: skip
    return cases


def nesting_cases() -> list[Case]:
    text = QUICK.read_text()
    deep_array = "[" * 500 + '"mlp"' + "]" * 500
    deep_table = "{a = " * 500 + "1" + "}" * 500
    return [
        _raw_case("nest.array-500", text.replace('models = ["ssm"', f"models = [{deep_array}, \"ssm\"").encode()),
        _raw_case("nest.inline-table-500", (text + f"\n[extra]\nx = {deep_table}\n").encode()),
        _raw_case("nest.array-5000", ("models = " + "[" * 5000 + "]" * 5000 + "\n").encode()),
        _raw_case("nest.dotted-table-2000", (text + "\n[" + ".".join(["a"] * 2000) + "]\nb = 1\n").encode()),
        _raw_case("nest.dotted-table-in-protocol",
                  (text + "\n[dynamics." + ".".join(["a"] * 50) + "]\nb = 1\n").encode()),
        _raw_case("nest.array-20-seeds",
                  text.replace("seeds = [0, 1, 2]", "seeds = " + "[" * 20 + "0" + "]" * 20).encode()),
    ]  # fmt: skip


def encoding_cases() -> list[Case]:
    text = QUICK.read_text()
    return [
        _raw_case("enc.utf16", text.encode("utf-16")),
        _raw_case("enc.latin1", text.replace("about 3 min", "\u00e9t\u00e9 3 min").encode("latin-1")),
        _raw_case("enc.invalid-byte", text.encode().replace(b"quick", b"qu\xffck", 1)),
        _raw_case("enc.nul-byte", text.encode().replace(b"quick", b"qu\x00ck", 1)),
        _raw_case("enc.empty", b""),
        _raw_case("enc.binary", bytes(range(256)) * 4),
        _raw_case("enc.bom-then-garbage", b"\xef\xbb\xbf\xff\xfe"),
        _raw_case("enc.too-large", (text + "\n# " + "x" * (2 << 20) + "\n").encode()),
        _raw_case("enc.toml-syntax", b"name = ["),
        _raw_case("enc.only-a-table", b"[dynamics]\n"),
        _raw_case("enc.int-too-many-digits",
                  text.replace("param_budget = 20000", "param_budget = " + "9" * 5000).encode()),
        _raw_case("enc.surrogate-escape", text.replace('name = "quick"', 'name = "\\ud800"').encode()),
    ]  # fmt: skip


def set_cases() -> list[Case]:
    overrides = [
        "dynamics.inner_lr=inf", "dynamics.inner_lr=nan", "dynamics.inner_lr=-inf", "dynamics.outer_lr=inf",
        "dynamics.adapter_lr=inf", "mpc.adapt_lr=inf", "mpc.inner_lr=inf", "mpc.adapter_lr=nan",
        "policy.inner_lr=inf", "policy.outer_lr=inf", "policy.init_std=inf", "policy.gamma=nan",
        "timing.confidence=nan", "seeds=[0,0]", 'models=["mlp","mlp"]', 'name=".."', 'name="a/b"', "dynamics=3",
        "dynamics.nope=1", "nope.x=1", "=3", ".x=1", "dynamics.=1", "x", "dynamics.tasks.x=1",
        'dynamics.tasks=["pendulum-mass-length","pendulum-mass-length"]', "dynamics.arms=[]",
        "v=" + "[" * 600 + "]" * 600, "dynamics.horizon=1000000000", "dynamics.meta_iterations=99999999999999999999999",
        "param_budget=1e9", "seeds=[2147483648]", "seeds=[-1]", "dynamics.sequence_length=101",
        "dynamics.support_windows=9", 'timing.collect_tasks=["nope"]', "policy.init_std=0",
        "dynamics.inner_lr=", "dynamics.horizon=1_000_000",
    ]  # fmt: skip
    return [Case(f"set.{text[:40]}", ("run", "quick", "--set", text, "--out", "{tmp}/out", "--no-report"))
            for text in overrides]  # fmt: skip


def cli_cases() -> list[Case]:
    base = ("run", "quick", "--out", "{tmp}/out", "--no-report")
    argvs: list[tuple[str, tuple[str, ...]]] = [
        ("models-empty", (*base, "--models", "")), ("models-blank", (*base, "--models", " , ")),
        ("models-dup", (*base, "--models", "mlp,mlp")), ("models-unknown", (*base, "--models", "nope")),
        ("models-trailing-comma", (*base, "--models", "mlp,")), ("tasks-empty", (*base, "--tasks", "")),
        ("tasks-unknown", (*base, "--tasks", "nope")), ("tasks-dup", (*base, "--tasks", "point-nav-2d,point-nav-2d")),
        ("tasks-not-in-suite", (*base, "--tasks", "ant-goal")), ("seeds-empty", (*base, "--seeds", "")),
        ("seeds-word", (*base, "--seeds", "x")), ("seeds-reversed", (*base, "--seeds", "3-1")),
        ("seeds-negative", (*base, "--seeds", "-1")), ("seeds-dup", (*base, "--seeds", "0,0")),
        ("seeds-2**31", (*base, "--seeds", "2147483648")), ("seeds-huge-range", (*base, "--seeds", "0-99999999999")),
        ("seeds-float", (*base, "--seeds", "1.5")), ("seeds-trailing-comma", (*base, "--seeds", "0,")),
        ("seeds-three-part-range", (*base, "--seeds", "0-1-2")), ("jobs-zero", (*base, "--jobs", "0")),
        ("jobs-negative", (*base, "--jobs", "-1")), ("jobs-word", (*base, "--jobs", "x")),
        ("jobs-float", (*base, "--jobs", "1.5")), ("jobs-huge", (*base, "--jobs", "100000")),
        ("threads-zero", (*base, "--threads", "0")), ("threads-word", (*base, "--threads", "many")),
        ("out-empty", ("run", "quick", "--out", "", "--no-report")),
        ("out-under-file", ("run", "quick", "--out", "{tmp}/afile/run", "--no-report")),
        ("out-is-file", ("run", "quick", "--out", "{tmp}/afile", "--no-report")),
        ("out-in-proc", ("run", "quick", "--out", "/proc/ssm-metarl-run", "--no-report")),
        ("out-under-dev-null", ("run", "quick", "--out", "/dev/null/run", "--no-report")),
        ("out-nul", ("run", "quick", "--out", "{tmp}/a\x00b", "--no-report")),
        ("out-long-name", ("run", "quick", "--out", "{tmp}/" + "x" * 300, "--no-report")),
        ("report-dir-empty", ("run", "quick", "--out", "{tmp}/out", "--report-dir", "")),
        ("report-dir-under-file", ("run", "quick", "--out", "{tmp}/out", "--report-dir", "{tmp}/afile/r")),
        ("report-dir-in-proc", ("run", "quick", "--out", "{tmp}/out", "--report-dir", "/proc/r")),
        ("report-dir-with-no-report", (*base, "--report-dir", "{tmp}/r")),
        ("scheduler-without-dask", (*base, "--scheduler", "tcp://127.0.0.1:8786")),
        ("dask-without-scheduler", (*base, "--backend", "dask")),
        ("scheduler-garbage", (*base, "--backend", "dask", "--scheduler", "garbage!")),
        ("scheduler-no-port", (*base, "--backend", "dask", "--scheduler", "garbage")),
        ("scheduler-empty", (*base, "--backend", "dask", "--scheduler", "")),
        ("scheduler-bad-port", (*base, "--backend", "dask", "--scheduler", "tcp://host:99999")),
        ("scheduler-spaces", (*base, "--backend", "dask", "--scheduler", "tcp://a b:1")),
        ("scheduler-unreachable", (*base, "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9")),
        ("backend-unknown", (*base, "--backend", "ray")), ("unknown-option", (*base, "--colour", "red")),
        ("set-no-value", (*base, "--set")), ("no-suite", ("run",)), ("suite-empty", ("run", "", "--no-report")),
        ("suite-missing", ("run", "{tmp}/missing.toml")), ("suite-directory", ("run", "{tmp}")),
        ("suite-nul", ("run", "qu\x00ick")), ("suite-long", ("run", "x" * 5000)),
        ("suite-builtin-with-space", ("run", "quick ")), ("no-command", ()), ("unknown-command", ("launch",)),
        ("report-missing-dir", ("report", "{tmp}/nope")), ("report-file", ("report", "{tmp}/afile")),
        ("report-empty", ("report", "")), ("report-out-empty", ("report", "{tmp}", "--out", "")),
        ("report-out-under-file", ("report", "{tmp}", "--out", "{tmp}/afile/r")),
        ("report-not-a-run", ("report", "{tmp}")), ("report-unknown-option", ("report", "{tmp}", "--colour")),
        ("list-extra-argument", ("list", "quick")), ("bench-threads-word", ("bench", "--threads", "x")),
        ("bench-device-unknown", ("bench", "--device", "tpu")), ("bench-seeds-word", ("bench", "--seeds", "x")),
    ]  # fmt: skip
    return [Case(f"cli.{label}", argv) for label, argv in argvs]


def all_cases() -> list[Case]:
    return [
        *field_cases(), *top_level_cases(), *table_cases(), *cross_field_cases(), *size_cases(), *nesting_cases(),
        *encoding_cases(), *set_cases(), *cli_cases(),
    ]  # fmt: skip


# ---- running one input


@dataclasses.dataclass(frozen=True)
class Outcome:
    case: str
    kind: str  # "clean", "traceback", "silent accept" or "other"
    code: int | None
    stderr: str


class _LineCounter(logging.Handler):
    """Log records that the CLI would print to stderr (main logs at INFO and above)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def compute_patched() -> Iterator[None]:
    """The compute entry points raise ``ComputeReached``; the Dask probe waits 0.5 s at most."""
    import suites.bench.targets
    import suites.preflight
    import suites.report
    import suites.runner

    def reached(*args: Any, **kwargs: Any) -> Any:
        raise ComputeReached

    def report(run_dir: Any, *args: Any, **kwargs: Any) -> Any:
        from suites.report.load import load_run

        load_run(run_dir)  # a directory that is no run fails here, as in build_report
        raise ComputeReached

    patches = [(suites.runner, "run_suite", reached), (suites.runner, "execute_cell", reached),
               (suites.report, "build_report", report), (suites.bench.targets, "run_bench", reached)]  # fmt: skip
    saved = [getattr(module, name) for module, name, _ in patches]
    saved_timeout = suites.preflight.SCHEDULER_TIMEOUT_S
    for module, name, fake in patches:
        setattr(module, name, fake)
    suites.preflight.SCHEDULER_TIMEOUT_S = 0.5
    try:
        yield
    finally:
        for (module, name, _), value in zip(patches, saved, strict=True):
            setattr(module, name, value)
        suites.preflight.SCHEDULER_TIMEOUT_S = saved_timeout


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(case: Case, folder: Path) -> Outcome:
    """Run ``case`` in ``folder`` (the working directory, holding only ``afile`` and the suite file)."""
    from suites.cli import main

    suite = folder / "suite.toml"
    if case.suite is not None:
        suite.write_bytes(case.suite)
    argv = [a.replace("{suite}", str(suite)).replace("{tmp}", str(folder)) for a in case.argv]
    before = _tree(folder)
    err, out = io.StringIO(), io.StringIO()
    counter = _LineCounter()
    root = logging.getLogger()
    level = root.level
    root.addHandler(counter)
    root.setLevel(logging.INFO)  # as main's logging.basicConfig sets it
    code: int | None = None
    kind = ""
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except ComputeReached:
                kind = "silent accept"
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception as exc:  # escaped main: the CLI would print a traceback
                kind = "traceback"
                err.write(f"Traceback: {type(exc).__name__}: {exc}\n")
    finally:
        root.removeHandler(counter)
        root.setLevel(level)
        if case.suite is not None:
            suite.unlink()
    text = err.getvalue()
    lines = text.splitlines() + counter.lines
    created = _tree(folder) - before
    if not kind:
        if "Traceback" in text or text.startswith("error: unexpected "):
            kind = "traceback"
        elif code == 0:
            kind = "silent accept"
        elif code == 2 and len(lines) == 1 and lines[0].startswith("error:") and not created:
            kind = "clean"
        else:
            kind = "other"
    if created:
        text += f"[created {sorted(created)}]"
    return Outcome(case.id, kind, code, text + "".join(f"[log] {line}\n" for line in counter.lines))


def run_all(cases: list[Case], folder: Path) -> list[Outcome]:
    (folder / "afile").write_text("a file where a directory is expected\n")
    old = Path.cwd()
    os.chdir(folder)
    try:
        with compute_patched():
            return [run_case(case, folder) for case in cases]
    finally:
        os.chdir(old)


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    kinds = ("clean", "traceback", "silent accept", "other")
    return {"inputs tried": len(outcomes), **{k: sum(o.kind == k for o in outcomes) for k in kinds}}


# ---- the tests



def _check(outcomes: list[Outcome], record: Callable[[str, object], None]) -> None:
    summary = counts(outcomes)
    record("fuzz_counts", json.dumps(summary))
    print(f"\ninput fuzz: {summary}")
    bad = [f"{o.case} [{o.kind}, exit {o.code}]: {o.stderr.strip()[:300]}" for o in outcomes if o.kind != "clean"]
    assert not bad, f"{len(bad)} of {len(outcomes)} inputs were not refused cleanly:\n" + "\n".join(bad)


def test_every_malformed_input_is_one_clean_line(tmp_path: Path, monkeypatch, record_property) -> None:
    """All inputs: exit 2, one ``error:`` line, no traceback, no compute, nothing created."""
    monkeypatch.delenv("DEBUG", raising=False)
    cases = all_cases()
    assert len(cases) >= 400
    assert len({c.id for c in cases}) == len(cases)
    _check(run_all(cases, tmp_path), record_property)


def test_errors_name_the_field_and_file(tmp_path: Path, monkeypatch) -> None:
    """A sample of messages: the file or option, the field, the given value."""
    monkeypatch.delenv("DEBUG", raising=False)
    by_id = {c.id: c for c in all_cases()}
    expected = {
        "dynamics.inner_lr=inf": "suite.toml: dynamics.inner_lr: expected a finite number, got inf",
        "policy.init_std=nan": "suite.toml: policy.init_std: expected a finite number, got nan",
        "top.name=dotdot": "suite.toml: name: expected a non-empty string of at most 64 letters",
        "top.seeds=beyond-int64": "suite.toml: seeds: expected ints in [0, 2147483647], got 10000000000000000000000",
        "top.models=dup": "suite.toml: models: expected distinct values, got 'mlp' twice",
        "enc.invalid-byte": "suite.toml: expected UTF-8 text, got byte 0xff at offset",
        "nest.array-500": "suite.toml: not valid TOML: nested too deeply",
        "cli.out-under-file":
            "--out {tmp}/afile/run: expected a directory path, got {tmp}/afile, which is not a directory",
        "cli.scheduler-garbage": "--scheduler: expected an address like tcp://host:8786, got 'garbage!'",
        "cli.models-empty": "--models: expected a comma-separated list of names, got ''",
    }  # fmt: skip
    outcomes = run_all([by_id[k] for k in expected], tmp_path)
    for outcome in outcomes:
        assert outcome.kind == "clean", outcome
        assert expected[outcome.case].replace("{tmp}", str(tmp_path)) in outcome.stderr, outcome


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    logging.getLogger().addHandler(logging.NullHandler())  # main's basicConfig stays a no-op: no handler on a StringIO
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(all_cases(), Path(tmp))
    for o in results:
        if o.kind != "clean":
            print(f"{o.kind:14} {o.case}: exit {o.code}: {o.stderr.strip()[:300]}")
    print(json.dumps(counts(results)))
    sys.exit(0 if all(o.kind == "clean" for o in results) else 1)
