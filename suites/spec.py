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
import tomllib
from pathlib import Path
from typing import Any

from models import MODELS
from suites.protocols import PROTOCOLS
from suites.validate import SpecError, build_settings, check_choices

DEFS_DIR = Path(__file__).parent / "defs"
TOP_LEVEL_FIELDS = ("name", "description", "models", "seeds", "param_budget")


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
    """Read a built-in suite by name or a TOML file by path; return (raw table, source)."""
    builtins = builtin_suites()
    if name_or_path in builtins:
        path = builtins[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise SpecError(
                f"suite: {name_or_path!r} is neither a built-in suite {sorted(builtins)} nor a TOML file"
            )
    try:
        return tomllib.loads(path.read_text()), str(path)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"dynamics.meta_iterations=50"`` -> (["dynamics", "meta_iterations"], 50).

    The value is read as a TOML value (numbers, booleans, ["lists"]); anything else is a string.
    """
    if "=" not in text:
        raise SpecError(f"--set: expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


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
        node[keys[-1]] = value
    return table


def parse_suite(table: dict[str, Any], source: str = "<suite>") -> SuiteSpec:
    """Validate a raw suite table into a ``SuiteSpec``; errors name source, field and choices."""
    top = {k: v for k, v in table.items() if not isinstance(v, dict)}
    protocol_tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    unknown = sorted(set(top) - set(TOP_LEVEL_FIELDS))
    if unknown:
        raise SpecError(f"{source}: unknown field(s) {unknown}; valid fields are {list(TOP_LEVEL_FIELDS)}")
    check_choices(f"{source}: protocol table", protocol_tables, PROTOCOLS)
    if not protocol_tables:
        raise SpecError(f"{source}: no protocol table; expected at least one of {sorted(PROTOCOLS)}")

    name = top.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise SpecError(f"{source}: name: expected a non-empty string without '/', got {name!r}")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{source}: description: expected a string, got {description!r}")
    models = top.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise SpecError(f"{source}: models: expected a non-empty list of names from {sorted(MODELS)}, got {models!r}")
    check_choices(f"{source}: models", models, MODELS)
    seeds = top.get("seeds")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SpecError(f"{source}: seeds: expected a non-empty list of distinct non-negative ints, got {seeds!r}")
    budget = top.get("param_budget")
    if not isinstance(budget, int) or isinstance(budget, bool) or not 1_000 <= budget <= 10_000_000:
        raise SpecError(f"{source}: param_budget: expected an int in [1000, 10000000], got {budget!r}")

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


def _parse_protocol(name: str, table: dict[str, Any], source: str) -> ProtocolSpec:
    protocol = PROTOCOLS[name]
    where = f"{source}: {name}"
    table = dict(table)
    tasks = table.pop("tasks", [])
    arms = table.pop("arms", list(protocol.arms))
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SpecError(f"{where}.tasks: expected a list of task names, got {tasks!r}")
    if protocol.needs_tasks and not tasks:
        raise SpecError(f"{where}.tasks: expected at least one of {sorted(protocol.valid_tasks())}, got []")
    check_choices(f"{where}.tasks", tasks, protocol.valid_tasks())
    if not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms):
        raise SpecError(f"{where}.arms: expected a non-empty list from {list(protocol.arms)}, got {arms!r}")
    check_choices(f"{where}.arms", arms, protocol.arms)
    settings: Any = build_settings(protocol.settings_class, table, where)
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

    Args:
        name_or_path: "quick", "mujoco", "full", or a TOML file.
        models, seeds: replace the suite's lists.
        tasks: keep only these tasks in every protocol (protocols left without tasks are dropped).
        overrides: ``key=value`` strings with dotted keys (``dynamics.meta_iterations=50``).
    """
    table, source = read_suite_table(name_or_path)
    table = apply_overrides(table, overrides or [])
    if models is not None:
        table["models"] = models
    if seeds is not None:
        table["seeds"] = seeds
    if tasks is not None:
        known = set()
        for key, value in list(table.items()):
            if isinstance(value, dict) and value.get("tasks"):
                known |= set(value["tasks"])
                value["tasks"] = [t for t in value["tasks"] if t in tasks]
                if not value["tasks"]:
                    del table[key]
        check_choices(f"--tasks (tasks of suite {table.get('name')!r})", tasks, known)
    return parse_suite(table, source)
