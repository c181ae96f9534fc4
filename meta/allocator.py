"""Keep freed memory in the process (glibc malloc), so that reusing it costs no page faults.

A vmapped MAML meta-update frees and allocates tensors of about a megabyte (16 tasks x a
window's activations) many times per call. With glibc's default, adaptive thresholds, free
memory at the top of the heap is handed back to the OS and mapped afresh by the next allocation,
so every meta-update pays a page fault per page it reuses (the per-task loop, which reuses small
blocks, hardly does). PyTorch on CPU is often run with jemalloc or tcmalloc for the same reason;
this gets the gain with the system allocator: two ``mallopt`` calls, no new dependency. Figures
and the commands that measure them: docs/performance.md, "Freed memory and page faults".

Every suite cell (``suites.runner.execute_cell``, in whichever process runs it),
``ssm-metarl bench``, ``python -m meta.vmap_timing`` and the pytest benchmarks call
``keep_freed_memory()``; call it yourself when driving MetaMAML from your own script. The
cost: memory a process has freed is kept for its own reuse rather than returned to the OS
before the process ends. ``SSM_METARL_MALLOC=system`` leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1
"""mallopt parameter: free memory at the top of the heap above this many bytes goes back to the OS."""
M_MMAP_THRESHOLD = -3
"""mallopt parameter: allocations of at least this many bytes get their own mapping (unmapped on free)."""

TRIM_THRESHOLD_BYTES = 1 << 30
MMAP_THRESHOLD_BYTES = 1 << 27


@functools.cache
def keep_freed_memory() -> bool:
    """Raise this process's glibc trim threshold to 1 GiB and mmap threshold to 128 MiB.

    Returns True where both settings took effect; False where the C library is not glibc (no
    ``mallopt``), or where the environment says ``SSM_METARL_MALLOC=system``. Idempotent.
    """
    if os.environ.get("SSM_METARL_MALLOC", "") == "system":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    )
