"""Timing of one meta-update, vmapped against the per-task loop (a speed target: docs/performance.md).

    python -m meta.vmap_timing                       # every registered model, the bench's setting
    python -m meta.vmap_timing --models mlp ssm --tasks 16 --inner-steps 3

The defaults are the setting of ``ssm-metarl bench --targets`` (suites/bench/targets.py TargetSettings):
16 tasks, models sized to 20k parameters, input 23 and output 17 features, support and query of
4 windows x 25 steps, one second-order inner step. Three calls run side by side in one process,
interleaved, so machine noise hits them alike: the loop and the vmapped path at ``n_tasks``, and
the vmapped path at one task. Each figure is the median of ``repeats`` timed calls after
``warmup`` untimed ones, on the process CPU clock (``time.process_time``: time the process
spends descheduled on a shared machine is not counted; use one torch thread).

The one-task call splits the vmapped time into a fixed part and a part per task. The per-task
part is the batched kernels' own work (the same arithmetic the loop does), so the loop time over
``n_tasks`` times that part is the speed-up vmap would reach with no fixed overhead at all: a
ceiling that no change to the MAML code can pass, only a cheaper model forward or backward.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from meta.allocator import keep_freed_memory
from meta.maml import MetaMAML
from meta.tasks import TaskBatch
from models import MODELS, make_model


@dataclasses.dataclass(frozen=True)
class MetaUpdateTiming:
    """Median process-CPU times of ``MetaMAML.meta_update`` on one meta-batch."""

    model: str
    """Registry name."""
    n_tasks: int
    """Tasks in the meta-batch."""
    vmap_ms: float
    """Median milliseconds per meta-update, vectorize=True, ``n_tasks`` tasks."""
    loop_ms: float
    """Median milliseconds per meta-update, vectorize=False, ``n_tasks`` tasks."""
    vmap_one_ms: float
    """Median milliseconds per meta-update, vectorize=True, one task."""

    @property
    def speedup(self) -> float:
        """loop / vmap."""
        return self.loop_ms / self.vmap_ms

    @property
    def per_task_ms(self) -> float:
        """What each task beyond the first adds to the vmapped time (its batched kernels' work)."""
        return (self.vmap_ms - self.vmap_one_ms) / (self.n_tasks - 1)

    @property
    def ceiling(self) -> float:
        """loop / (n_tasks x per_task_ms): the speed-up with the vmapped path's fixed cost at zero."""
        return self.loop_ms / (self.n_tasks * self.per_task_ms) if self.per_task_ms > 0 else float("inf")


def _random_tasks(n_tasks: int, windows: int, length: int, input_dim: int, output_dim: int, seed: int) -> TaskBatch:
    gen = torch.Generator().manual_seed(seed)
    shape_x, shape_y = (n_tasks, windows, length, input_dim), (n_tasks, windows, length, output_dim)
    return TaskBatch(*(torch.randn(s, generator=gen) for s in (shape_x, shape_y) * 2))


def time_meta_update(
    name: str,
    n_tasks: int = 16,
    inner_steps: int = 1,
    param_budget: int = 20_000,
    windows: int = 4,
    length: int = 25,
    input_dim: int = 23,
    output_dim: int = 17,
    repeats: int = 7,
    warmup: int = 1,
    seed: int = 0,
) -> MetaUpdateTiming:
    """Time second-order meta-updates of model ``name`` on random sequence tasks.

    Args:
        name: a key of ``models.MODELS``.
        n_tasks: meta-batch size, at least 2 (the one-task call is the other point of the split).
        inner_steps: inner SGD steps.
        param_budget: parameters the model is sized to.
        windows, length: each task's support and query are (windows, length, features).
        input_dim, output_dim: the model's features.
        repeats, warmup: timed and untimed calls per path.
        seed: seeds the model and the data.

    Returns:
        The median times of the three calls.
    """
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 2:
        raise ValueError(f"n_tasks: expected an int >= 2, got {n_tasks!r}")
    for field, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{field}: expected an int >= {low}, got {value!r}")
    tasks = _random_tasks(n_tasks, windows, length, input_dim, output_dim, seed)
    torch.manual_seed(seed)
    model = make_model(name, input_dim, output_dim, param_budget=param_budget)

    def maml(vectorize: bool) -> MetaMAML:  # outer_lr 0: the weights stay put, every call does the same work
        return MetaMAML(model, inner_lr=0.01, outer_lr=0.0, num_inner_steps=inner_steps, vectorize=vectorize)

    calls = {
        "vmap": (maml(True), tasks),
        "loop": (maml(False), tasks),
        "vmap_one": (maml(True), TaskBatch.stack([tasks[0]])),
    }
    times: dict[str, list[float]] = {key: [] for key in calls}
    for i in range(warmup + repeats):
        for key, (m, batch) in calls.items():
            start = time.process_time()
            m.meta_update(batch)
            if i >= warmup:
                times[key].append(time.process_time() - start)
    ms = {key: 1e3 * statistics.median(t) for key, t in times.items()}
    return MetaUpdateTiming(name, n_tasks, ms["vmap"], ms["loop"], ms["vmap_one"])


def main(argv: list[str] | None = None) -> None:
    """Print one line per model: the three medians, the speed-up and its ceiling."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=sorted(MODELS), help="registry names")
    parser.add_argument("--tasks", type=int, default=16, help="tasks per meta-batch")
    parser.add_argument("--inner-steps", type=int, default=1, help="inner SGD steps")
    parser.add_argument("--param-budget", type=int, default=20_000, help="parameters of every model")
    parser.add_argument("--windows", type=int, default=4, help="sequences per support / query")
    parser.add_argument("--length", type=int, default=25, help="time steps per sequence")
    parser.add_argument("--input-dim", type=int, default=23, help="input features")
    parser.add_argument("--output-dim", type=int, default=17, help="output features")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per path")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as in every ssm-metarl process (meta/allocator.py)
    torch.set_num_threads(args.threads)
    for name in args.models:
        t = time_meta_update(
            name, args.tasks, args.inner_steps, args.param_budget, args.windows, args.length,
            args.input_dim, args.output_dim, repeats=args.repeats,
        )  # fmt: skip
        print(
            f"{name:14s} tasks={t.n_tasks} vmap {t.vmap_ms:8.1f} ms  loop {t.loop_ms:8.1f} ms  "
            f"speedup {t.speedup:5.2f}x  | vmap 1 task {t.vmap_one_ms:7.1f} ms, "
            f"+{t.per_task_ms:6.2f} ms per task, ceiling {t.ceiling:5.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
