"""A small task distribution with a real task signal, for the meta-learning tests.

The sinusoid regression of MAML (Finn et al. 2017, section 5.1; cbfinn/maml data_generator.py):
y = A sin(x - phi) with amplitude A ~ U[0.1, 5], phase phi ~ U[0, pi], x ~ U[-5, 5], K points per
task. Inputs are (B, 1) rows (or, with ``as_sequence``, one sequence of the K points, (1, K, 1)).
"""

from __future__ import annotations

import math

import torch

from meta import TaskBatch


def sinusoid_tasks(
    n_tasks: int,
    k_shot: int = 10,
    n_query: int = 10,
    generator: torch.Generator | None = None,
    as_sequence: bool = False,
) -> TaskBatch:
    """``n_tasks`` sinusoid tasks with ``k_shot`` support and ``n_query`` query points each.

    Returns:
        A TaskBatch; x and y are (n_tasks, K, 1), or (n_tasks, 1, K, 1) with ``as_sequence``.
    """
    amp = torch.empty(n_tasks, 1, 1).uniform_(0.1, 5.0, generator=generator)
    phase = torch.empty(n_tasks, 1, 1).uniform_(0.0, math.pi, generator=generator)

    def draw(points: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.empty(n_tasks, points, 1).uniform_(-5.0, 5.0, generator=generator)
        y = amp * torch.sin(x - phase)
        if as_sequence:
            return x.unsqueeze(1), y.unsqueeze(1)
        return x, y

    support_x, support_y = draw(k_shot)
    query_x, query_y = draw(n_query)
    return TaskBatch(support_x, support_y, query_x, query_y)
