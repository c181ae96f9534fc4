"""Suite definitions: TOML files parsed into a frozen, validated ``SuiteSpec``.

A suite file names the models, seeds and parameter budget shared by all its protocols, and one
table per protocol with that protocol's tasks, arms and settings::

    name = "quick"
    description = "Every model, 3 seeds, small budgets."
    models = ["ssm", "lstm", "gru", "transformer", "mlp", "neural-state"]
    seeds = [0, 1, 2]
    param_budget = 20000

    [dynamics]
    tasks = ["pendulum-mass-length"]
    arms = ["maml", "pretrain", "maml+adapter"]
    meta_iterations = 100

Built-in suites live in suites/defs/*.toml; any path works too. Command-line overrides
(``--set dynamics.meta_iterations=50``) are applied to the raw table before validation, so they
get the same checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from models import MODELS
from suites.protocols import PROTOCOLS
from suites.validate import SpecError, build_settings, check_choices, check_distinct, short

DEFS_DIR = Path(__file__).parent / "defs"
TOP_LEVEL_FIELDS = ("name", "description", "models", "seeds", "param_budget")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A suite name: it becomes a folder (results/<name>/, reports/<name>/), so 1-64 characters of
letters, digits, '_', '.' and '-', starting with a letter or digit (so never '.', '..' or hidden)."""
SEED_LIMIT = 2**31
"""Seeds are ints in [0, SEED_LIMIT): every generator a cell seeds takes them (numpy, torch, the
environments' resets, derived seeds such as 30_000 + 1_000 * seed) and they fit int64 columns."""
MAX_DESCRIPTION = 500
"""Characters of a description (one line of ``ssm-metarl list``)."""
MAX_FILE_BYTES = 1 << 20
"""A suite file is at most 1 MiB (the built-in ones are about 4 KB)."""
MAX_NESTING = 8
"""Levels of tables and lists a suite file may nest (it needs 3: the file, a protocol table, a list)."""


@dataclasses.dataclass(frozen=True)
class ProtocolSpec:
    """One protocol of a suite.

    Attributes:
        protocol: a key of ``suites.protocols.PROTOCOLS``.
        tasks: task distributions it runs on (empty for protocols without tasks, like timing).
        arms: which arms to run (protocol-specific choices).
        settings: the protocol's frozen settings dataclass (budgets, evaluation settings).
    """

    protocol: str
    tasks: tuple[str, ...]
    arms: tuple[str, ...]
    settings: Any


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
    """A validated suite: models x seeds x each protocol's tasks and arms.

    Attributes:
        name: suite name; the default results folder is results/<name>/.
        description: one line shown by ``ssm-metarl list``.
        models: zoo model names.
        seeds: one cell per seed.
        param_budget: every model is sized to this many parameters (within 10%).
        protocols: the protocols to run, in file order.
        source: the file it came from (not part of the hash).
    """

    name: str
    description: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    param_budget: int
    protocols: tuple[ProtocolSpec, ...]
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The resolved definition as plain data (what meta.json and suite.toml record)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in TOP_LEVEL_FIELDS}
        out["models"], out["seeds"] = list(self.models), list(self.seeds)
        for p in self.protocols:
            table = {"tasks": list(p.tasks), "arms": list(p.arms)}
            table.update({k: _plain(v) for k, v in dataclasses.asdict(p.settings).items()})
            out[p.protocol] = table
        return out

    def hash(self) -> str:
        """A hash of everything that changes results (the description and source excluded)."""
        data = self.to_dict()
        data.pop("description")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def builtin_suites() -> dict[str, Path]:
    """Built-in suite names -> their files."""
    return {p.stem: p for p in sorted(DEFS_DIR.glob("*.toml"))}


def read_suite_table(name_or_path: str) -> tuple[dict[str, Any], str]:
    """Read a built-in suite by name or a TOML file by path; return (raw table, source).

    Raises:
        SpecError: one line naming the file: not found, unreadable, larger than 1 MiB, not UTF-8,
            not TOML, or nested deeper than ``MAX_NESTING``.
    """
    builtins = builtin_suites()
    if name_or_path in builtins:
        path = builtins[name_or_path]
    else:
        path = Path(name_or_path)
        try:
            found = path.is_file()
        except (OSError, ValueError):  # a NUL byte, a name too long for the file system
            found = False
        if not found:
            raise SpecError(
                f"suite: {short(name_or_path)} is neither a built-in suite {sorted(builtins)} nor a TOML file"
            )
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"{path}: expected a suite file of at most {MAX_FILE_BYTES} bytes, got {size} bytes")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise SpecError(f"{path}: expected a readable suite file, got {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path}: expected UTF-8 text, got byte 0x{err.object[err.start]:02x} at offset {err.start}"
        ) from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise SpecError(f"{path}: not valid TOML: nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise SpecError(f"{path}: not valid TOML: {str(err).splitlines()[0]}") from None
    depth = nesting(table)
    if depth > MAX_NESTING:
        raise SpecError(f"{path}: expected tables and lists nested at most {MAX_NESTING} levels deep, got more")
    return table, str(path)


def nesting(value: Any, limit: int = MAX_NESTING) -> int:
    """Levels of dicts and lists in ``value`` (a scalar is 0), counted without recursion and
    only up to ``limit`` + 1: anything deeper reports ``limit`` + 1."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"dynamics.meta_iterations=50"`` -> (["dynamics", "meta_iterations"], 50).

    The value is read as a TOML value (numbers, booleans, ["lists"]); anything else is a string.
    """
    if "=" not in text:
        raise SpecError(f"--set: expected key=value, got {short(text)}")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(k.strip() for k in keys):
        raise SpecError(f"--set {short(text)}: expected a key like dynamics.meta_iterations, got {key.strip()!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except (RecursionError, ValueError):
        raise SpecError(f"--set {short(text)}: expected a value nested at most {MAX_NESTING} levels deep") from None
    if nesting(value) > MAX_NESTING:
        raise SpecError(f"--set {short(text)}: expected a value nested at most {MAX_NESTING} levels deep")
    return [k.strip() for k in keys], value


def apply_overrides(table: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``table`` with each ``key=value`` (dotted keys) set."""
    table = json.loads(json.dumps(table))
    for text in overrides:
        keys, value = parse_override(text)
        node = table
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise SpecError(f"--set {text}: {'.'.join(keys[:-1])!r} is not a protocol table of this suite")
            node = node[k]
        if isinstance(node.get(keys[-1]), dict) and not isinstance(value, dict):
            raise SpecError(f"--set {text}: {keys[-1]!r} is a protocol table; set its fields, e.g. "
                            f"{keys[-1]}.<field>=<value>")  # fmt: skip
        node[keys[-1]] = value
    return table


def parse_suite(table: dict[str, Any], source: str = "<suite>") -> SuiteSpec:
    """Validate a raw suite table into a ``SuiteSpec``; errors name source, field and choices."""
    top = {k: v for k, v in table.items() if not isinstance(v, dict)}
    protocol_tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    not_tables = sorted(set(top) & set(PROTOCOLS))
    if not_tables:
        key = not_tables[0]
        raise SpecError(f"{source}: {key}: expected a table [{key}], got {short(top[key])}")
    tables = sorted(set(protocol_tables) & set(TOP_LEVEL_FIELDS))
    if tables:
        key = tables[0]
        raise SpecError(f"{source}: {key}: expected a value, not a table, got {short(protocol_tables[key])}")
    unknown = sorted(set(top) - set(TOP_LEVEL_FIELDS))
    if unknown:
        raise SpecError(f"{source}: unknown field(s) {short(unknown)}; valid fields are {list(TOP_LEVEL_FIELDS)}")
    check_choices(f"{source}: protocol table", protocol_tables, PROTOCOLS)
    if not protocol_tables:
        raise SpecError(f"{source}: no protocol table; expected at least one of {sorted(PROTOCOLS)}")

    name = top.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SpecError(
            f"{source}: name: expected a non-empty string of at most 64 letters, digits, '_', '.' or '-', "
            f"starting with a letter or digit, got {short(name)}"
        )
    description = top.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION or not description.isprintable():
        raise SpecError(f"{source}: description: expected one line of at most {MAX_DESCRIPTION} printable "
                        f"characters, got {short(description)}")  # fmt: skip
    models = check_models(f"{source}: models", top.get("models"))
    seeds = check_seeds(f"{source}: seeds", top.get("seeds"))
    budget = top.get("param_budget")
    if not isinstance(budget, int) or isinstance(budget, bool) or not 1_000 <= budget <= 10_000_000:
        raise SpecError(f"{source}: param_budget: expected an int in [1000, 10000000], got {short(budget)}")

    protocols = tuple(_parse_protocol(name_, t, source) for name_, t in protocol_tables.items())
    return SuiteSpec(
        name=name,
        description=description,
        models=tuple(models),
        seeds=tuple(seeds),
        param_budget=budget,
        protocols=protocols,
        source=source,
    )


def check_models(where: str, models: Any) -> list[str]:
    """``models``, or SpecError unless it is a non-empty list of distinct zoo model names."""
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise SpecError(f"{where}: expected a non-empty list of names from {sorted(MODELS)}, got {short(models)}")
    check_choices(where, models, MODELS)
    check_distinct(where, models)
    return models


def check_seeds(where: str, seeds: Any) -> list[int]:
    """``seeds``, or SpecError unless it is a non-empty list of distinct ints in [0, SEED_LIMIT)."""
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SpecError(
            f"{where}: expected a non-empty list of distinct ints in [0, {SEED_LIMIT - 1}], got {short(seeds)}"
        )
    for seed in seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise SpecError(f"{where}: expected ints in [0, {SEED_LIMIT - 1}], got {short(seed)}")
    return seeds


def _parse_protocol(name: str, table: dict[str, Any], source: str) -> ProtocolSpec:
    protocol = PROTOCOLS[name]
    where = f"{source}: {name}"
    table = dict(table)
    tasks = table.pop("tasks", [])
    arms = table.pop("arms", list(protocol.arms))
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SpecError(f"{where}.tasks: expected a list of task names, got {short(tasks)}")
    if protocol.needs_tasks and not tasks:
        raise SpecError(f"{where}.tasks: expected at least one of {sorted(protocol.valid_tasks())}, got []")
    check_choices(f"{where}.tasks", tasks, protocol.valid_tasks())
    check_distinct(f"{where}.tasks", tasks)
    if not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms):
        raise SpecError(f"{where}.arms: expected a non-empty list from {list(protocol.arms)}, got {short(arms)}")
    check_choices(f"{where}.arms", arms, protocol.arms)
    check_distinct(f"{where}.arms", arms)
    settings: Any = build_settings(protocol.settings_class, table, where)
    check_arms = getattr(settings, "check_arms", None)  # settings whose limits depend on the arms (mpc's oracle)
    if check_arms is not None:
        try:
            check_arms(tuple(arms))
        except ValueError as err:
            raise SpecError(f"{where}: {err}") from None
    return ProtocolSpec(protocol=name, tasks=tuple(tasks), arms=tuple(arms), settings=settings)


def load_suite(
    name_or_path: str,
    *,
    models: list[str] | None = None,
    tasks: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
) -> SuiteSpec:
    """Load a suite by built-in name or path and apply the command-line overrides.

    Everything is checked here, before anything runs: every field's type, finiteness and range,
    the checks that span fields (windows against the episodes that hold them, the mpc oracle's
    episodes against its windows, ...), duplicates in every list, the suite name (it becomes a
    folder) and the seeds' range. Errors are one-line ``SpecError``s naming the file (or the
    command-line option), the field, what was expected and what was given.

    Args:
        name_or_path: "quick", "mujoco", "full", or a TOML file.
        models, seeds: replace the suite's lists (errors name ``--models`` / ``--seeds``).
        tasks: keep only these tasks in every protocol (protocols left without tasks are dropped).
        overrides: ``key=value`` strings with dotted keys (``dynamics.meta_iterations=50``).
    """
    table, source = read_suite_table(name_or_path)
    table = apply_overrides(table, overrides or [])
    if models is not None:
        check_models("--models", models)
        table["models"] = models
    if seeds is not None:
        check_seeds("--seeds", seeds)
        table["seeds"] = seeds
    if tasks is not None:
        if not tasks or not all(isinstance(t, str) and t for t in tasks):
            raise SpecError(f"--tasks: expected a non-empty list of task names, got {short(tasks)}")
        check_distinct("--tasks", tasks)
        known = set()
        for key, value in list(table.items()):
            if isinstance(value, dict) and isinstance(value.get("tasks"), list) and value["tasks"]:
                known |= {t for t in value["tasks"] if isinstance(t, str)}
                value["tasks"] = [t for t in value["tasks"] if t in tasks]
                if not value["tasks"]:
                    del table[key]
        check_choices(f"--tasks (tasks of suite {short(table.get('name'))})", tasks, known)
    return parse_suite(table, source)
