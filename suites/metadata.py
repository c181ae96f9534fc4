"""Run metadata for meta.json: versions, commit, host, threads, suite hash and definition."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from suites.spec import SuiteSpec

PACKAGES = ("torch", "numpy", "pandas", "scipy", "gymnasium", "mujoco", "joblib", "seaborn", "matplotlib")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    """The commit of the checkout this package runs from ("unknown" outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def task_table(spec: SuiteSpec) -> list[dict[str, str]]:
    """One entry per task the suite uses: name, family, parameters, horizon, source."""
    from suites.tasks import get_distribution

    names = sorted({t for p in spec.protocols for t in p.tasks})
    table = []
    for name in names:
        dist = get_distribution(name)
        table.append({"name": name, "family": dist.family, "parameters": dist.space.describe(),
                      "horizon": str(dist.horizon), "source": dist.source})  # fmt: skip
    return table


def run_metadata(spec: SuiteSpec, **run_info: Any) -> dict[str, Any]:
    return {
        "suite_name": spec.name,
        "suite_hash": spec.hash(),
        "suite": spec.to_dict(),
        "suite_source": spec.source,
        "tasks": task_table(spec),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "device": "cpu",
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **run_info,
    }
