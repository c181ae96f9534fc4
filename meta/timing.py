"""Timing of one meta-update, vmapped against the per-task loop (DESIGN.md performance target).

    python -m meta.timing                       # every registered model, 16 tasks
    python -m meta.timing --models mlp ssm --tasks 16 --inner-steps 3

Both paths run side by side in one process, interleaved, so machine noise hits them alike; the
figure is the median of ``repeats`` timed calls after ``warmup`` untimed ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from meta.maml import MetaMAML
from meta.tasks import TaskBatch
from models import MODELS, make_model


@dataclasses.dataclass(frozen=True)
class MetaUpdateTiming:
    """Median wall times of ``MetaMAML.meta_update`` on one meta-batch."""

    model: str
    """Registry name."""
    n_tasks: int
    """Tasks in the meta-batch."""
    vmap_ms: float
    """Median milliseconds per meta-update, vectorize=True."""
    loop_ms: float
    """Median milliseconds per meta-update, vectorize=False."""

    @property
    def speedup(self) -> float:
        """loop / vmap."""
        return self.loop_ms / self.vmap_ms


def time_meta_update(
    name: str,
    n_tasks: int = 16,
    inner_steps: int = 3,
    hidden_dim: int = 128,
    batch: int = 10,
    steps: int = 1,
    input_dim: int = 1,
    output_dim: int = 1,
    repeats: int = 7,
    warmup: int = 2,
    seed: int = 0,
) -> MetaUpdateTiming:
    """Time second-order meta-updates of model ``name`` on random tasks of shape (batch, steps, D).

    Args:
        name: a key of ``models.MODELS``.
        n_tasks, inner_steps: meta-batch size and inner SGD steps.
        hidden_dim, input_dim, output_dim: the model's size.
        batch, steps: each task's support and query are (batch, steps, input_dim).
        repeats, warmup: timed and untimed calls per path.
        seed: seeds the model and the data.

    Returns:
        The median times of both paths.
    """
    gen = torch.Generator().manual_seed(seed)
    shape_x, shape_y = (n_tasks, batch, steps, input_dim), (n_tasks, batch, steps, output_dim)
    tasks = TaskBatch(*(torch.randn(s, generator=gen) for s in (shape_x, shape_y) * 2))
    torch.manual_seed(seed)
    model = make_model(name, input_dim, output_dim, hidden_dim=hidden_dim)
    paths = {
        v: MetaMAML(model, inner_lr=0.01, outer_lr=0.0, num_inner_steps=inner_steps, vectorize=v) for v in (True, False)
    }  # outer_lr 0: the weights stay put, so every call does the same work
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(warmup + repeats):
        for vectorize, maml in paths.items():
            start = time.perf_counter()
            maml.meta_update(tasks)
            if i >= warmup:
                times[vectorize].append(time.perf_counter() - start)
    return MetaUpdateTiming(name, n_tasks, 1e3 * statistics.median(times[True]), 1e3 * statistics.median(times[False]))


def main(argv: list[str] | None = None) -> None:
    """Print one line per model: vmap and loop medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=sorted(MODELS), help="registry names")
    parser.add_argument("--tasks", type=int, default=16, help="tasks per meta-batch")
    parser.add_argument("--inner-steps", type=int, default=3, help="inner SGD steps")
    parser.add_argument("--hidden", type=int, default=128, help="hidden_dim of every model")
    parser.add_argument("--batch", type=int, default=10, help="sequences per support / query")
    parser.add_argument("--steps", type=int, default=1, help="time steps per sequence")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per path")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.models:
        t = time_meta_update(
            name, args.tasks, args.inner_steps, args.hidden, args.batch, args.steps,
            repeats=args.repeats,
        )  # fmt: skip
        print(
            f"{name:14s} tasks={t.n_tasks} vmap {t.vmap_ms:8.1f} ms  loop {t.loop_ms:8.1f} ms  "
            f"speedup {t.speedup:5.2f}x"
        )


if __name__ == "__main__":
    main()
