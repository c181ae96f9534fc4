"""Resuming a run directory: is it this suite's, and are its stored models whole?

``check_resume`` refuses a directory that holds another suite definition (``suite.hash``, or,
when that file is missing, what meta.json, the cell records and suite.toml record);
``check_stored_models`` removes trained models that no longer load, so that the cell that needs
one trains it again. ``to_toml`` writes the resolved suite definition a run keeps.
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import torch

from suites.spec import SuiteSpec
from suites.validate import SpecError

log = logging.getLogger(__name__)


def _definition(toml_text: str) -> dict[str, Any]:
    table = tomllib.loads(toml_text)
    table.pop("description", None)
    return table


def _stored_definitions(run_dir: Path, spec: SuiteSpec) -> tuple[list[str], list[str]]:
    """What a run directory without suite.hash records of its suite definition.

    Returns:
        (agreeing, disagreeing): one line per file that records a definition (meta.json's and
        each cell record's suite hash, suite.toml's content), sorted into those that match
        ``spec`` and those that do not (naming the file and what it records).
    """
    expected = spec.hash()
    agree: list[str] = []
    disagree: list[str] = []
    hashes: dict[Path, Any] = {}
    for path in [run_dir / "meta.json", *sorted((run_dir / "cells").glob("*.json"))]:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # unreadable: says nothing (an unreadable cell record is run again anyway)
        if isinstance(data, dict) and data.get("suite_hash"):
            hashes[path] = data["suite_hash"]
    for path, given in hashes.items():
        name = path.relative_to(run_dir)
        if given == expected:
            agree.append(str(name))
        else:
            disagree.append(f"{name} records suite definition {given}")
    toml = run_dir / "suite.toml"
    if toml.is_file():
        try:
            same = _definition(toml.read_text()) == _definition(to_toml(spec.to_dict()))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            disagree.append("suite.toml is unreadable")
        else:
            (agree if same else disagree).append("suite.toml" if same else "suite.toml holds another definition")
    return agree, disagree


def check_resume(run_dir: Path, spec: SuiteSpec) -> None:
    """Refuse a run directory that holds a different suite definition.

    ``suite.hash`` decides when it is there. When it is missing, every file that records a
    definition must agree with this suite (the file is then rebuilt, with a warning); one that
    disagrees refuses the directory, naming it.
    """
    expected = spec.hash()
    recorded = run_dir / "suite.hash"
    if recorded.is_file():
        given = recorded.read_text().strip()
        if given != expected:
            raise SpecError(
                f"--out {run_dir}: holds a run of a different suite definition (hash "
                f"{given}, this one {expected}); use a new --out directory"
            )
        return
    agree, disagree = _stored_definitions(run_dir, spec)
    if disagree:
        more = f" (and {len(disagree) - 1} more)" if len(disagree) > 1 else ""
        raise SpecError(
            f"--out {run_dir}: holds a run of a different suite definition: suite.hash is missing and "
            f"{disagree[0]}{more}, this one is {expected}; use a new --out directory"
        )
    if agree:
        shown = ", ".join(agree[:3]) + (f" and {len(agree) - 3} more" if len(agree) > 3 else "")
        log.warning("%s: missing; rebuilt from %s, which record this suite's definition %s", recorded, shown, expected)


def check_stored_models(run_dir: Path) -> None:
    """Remove stored models (``models/*.pt``) that cannot be loaded, with a warning naming each:
    the first cell that needs one then trains and stores it again instead of failing on it."""
    folder = run_dir / "models"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.pt")):
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict):
                raise ValueError(f"expected a dict, got {type(blob).__name__}")
        except Exception as err:  # any loader failure means a damaged file: name it and why
            first = (str(err).strip().splitlines() or [""])[0].split(". ")[0]
            log.warning("%s: unreadable (%s: %s); removed, the cell that needs it trains the model again",
                        path, type(err).__name__, first[:200])  # fmt: skip
            path.unlink()


def to_toml(data: dict[str, Any]) -> str:
    """The resolved suite as TOML (flat values first, then one table per protocol)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if v is None:
            return '"none"'
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"
