"""``meta.keep_freed_memory``: memory a process frees is reused without page faults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Allocates, touches and frees a 64 MiB tensor 10 times after 3 warm-up rounds; prints the minor
# page faults of those 10 rounds (and whether keep_freed_memory took effect).
SCRIPT = """
import resource, sys
import torch
from meta.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def cycle():
    t = torch.ones(16 * 1024 * 1024)
    del t
for _ in range(3):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults_and_the_environment_can_opt_out() -> None:
    _, default = _faults("default")
    kept, after = _faults("keep")
    opted_out, system = _faults("keep", SSM_METARL_MALLOC="system")
    pages = 10 * 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    assert default >= pages // 2  # glibc's default: each 64 MiB block is mapped afresh, every page faults
    assert kept == "True" and after < pages // 100
    assert opted_out == "False" and system >= pages // 2
