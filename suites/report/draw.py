"""Drawing the report's figures, in worker processes when more than one core is usable.

Figures are independent (each :class:`~suites.report.document.Plot` is a suites.report.plots function
of its own data) and drawing them is most of a report's time, so a small process pool draws
them side by side while the main process goes on computing the tables of later sections. A
PNG's bytes depend only on its Plot, never on which process drew it or in what order.

Workers are forked (on platforms that have fork), so they start with matplotlib, seaborn's theme
and the fonts already loaded instead of importing them again.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType

from suites.report.document import Plot

MAX_JOBS = 8
"""Default cap on drawing processes: a report has about twenty figures."""


def default_jobs() -> int:
    """One drawing process per core this process may run on, at most MAX_JOBS; 1 inside a
    daemonic worker process (e.g. of multiprocessing.Pool), which may not start processes."""
    if multiprocessing.current_process().daemon:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_JOBS))


class Drawer:
    """Draws figures as they are submitted and hands back their PNG bytes by name.

    ``jobs == 1`` draws each figure at once in this process; ``jobs > 1`` sends it to a pool of
    that many worker processes. Use as a context manager so the pool is always shut down.

    Example:
        with Drawer(2) as drawer:
            drawer.submit("curves", Plot.of(plots.curves, data, "step", "MSE"))
            images = drawer.images()        # {"curves": b"\\x89PNG..."}
    """

    def __init__(self, jobs: int) -> None:
        if not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs: expected a positive int, got {jobs!r}")
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[str, Future[bytes] | bytes] = {}

    def __enter__(self) -> Drawer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc is not None)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=context)
        return self._pool

    def submit(self, name: str, plot: Plot) -> None:
        """Start drawing ``plot`` as figure ``name`` (names are unique in a report)."""
        if name in self._pending:
            raise ValueError(f"figure name: expected a name unique in the report, got {name!r} twice")
        if self.jobs == 1:
            self._pending[name] = plot.draw()
        else:
            self._pending[name] = self._executor().submit(plot.kind, *plot.args, **plot.kwargs)

    def images(self) -> dict[str, bytes]:
        """Every submitted figure's PNG bytes, waiting for those still being drawn.

        A figure that failed to draw raises its error here.
        """
        return {
            name: item if isinstance(item, bytes) else item.result()
            for name, item in self._pending.items()
        }
