"""Guards that keep test-time updates safe, as small pure functions over lists of tensors.

- ``clip_by_total_norm``: gradient clipping to a total L2 norm (Pascanu et al., ICML 2013).
- ``bound_step``: no parameter element moves more than ``max_step`` in one step.
- ``project_to_ball``: the trust region, an L2 ball of radius r around an anchor.
- ``guard_update``: both of the above together, so that both always hold.
- ``ema_update``: the moving anchor.
- ``Checkpoint``: weights, buffers, optimiser state and anchor, captured and restored exactly
  (rollback, ``Adapter.reset``, ``Adapter.session``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def _real(t: Tensor) -> Tensor:
    """A real view of ``t``: complex parameters count as pairs of real elements."""
    return torch.view_as_real(t) if t.is_complex() else t


def total_norm(tensors: Sequence[Tensor]) -> float:
    """The L2 norm of all elements of ``tensors`` together (inf / nan when any element is).

    Accumulated in float64, so a large but finite fp32 gradient (|g| > 1e19, whose square
    overflows fp32) is not mistaken for a non-finite one.
    """
    if not tensors:
        return 0.0
    # one fused call (the per-tensor norms of torch.linalg.vector_norm, bit for bit) instead of
    # a Python loop of calls: this runs every adaptation step
    norms = torch._foreach_norm([_real(t) for t in tensors], 2, dtype=torch.float64)
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every element of every tensor is finite."""
    if not tensors:
        return True
    # one check over all elements and one host sync, instead of one of each per tensor
    return bool(torch.isfinite(torch.cat([_real(t).reshape(-1) for t in tensors])).all())


def clip_by_total_norm(grads: Sequence[Tensor], max_norm: float | None) -> tuple[list[Tensor], float]:
    """Scale ``grads`` so their total L2 norm is at most ``max_norm``.

    Returns:
        ``(clipped, norm)``: the gradients to use and their total norm before clipping.
    """
    norm = total_norm(grads)
    if max_norm is None or not norm > max_norm:
        return list(grads), norm
    scale = max_norm / (norm + 1e-6)
    return [g * scale for g in grads], norm


def bound_step(new: Sequence[Tensor], old: Sequence[Tensor], max_step: float) -> list[Tensor]:
    """``old + clamp(new - old, -max_step, max_step)``, element by element (real and imaginary
    parts separately for complex parameters)."""
    out = []
    for n, o in zip(new, old, strict=True):
        change = _real(n - o).clamp(-max_step, max_step)
        out.append(o + (torch.view_as_complex(change) if o.is_complex() else change))
    return out


def project_to_ball(params: Sequence[Tensor], anchor: Sequence[Tensor], radius: float) -> list[Tensor]:
    """Euclidean projection onto {p : ||p - anchor||_2 <= radius}, the norm over all tensors."""
    dist = total_norm([p - a for p, a in zip(params, anchor, strict=True)])
    if dist <= radius:
        return list(params)
    scale = radius / dist
    return [a + (p - a) * scale for p, a in zip(params, anchor, strict=True)]


def _furthest_on_segment(
    old: Sequence[Tensor], new: Sequence[Tensor], anchor: Sequence[Tensor], radius: float
) -> list[Tensor]:
    """old + t (new - old) with the largest t in [0, 1] that stays in the ball (old inside it).

    Solves ||u + t v||^2 = r^2 with u = old - anchor, v = new - old for its positive root.
    """
    u = [_real(o - a).double() for o, a in zip(old, anchor, strict=True)]
    v = [_real(n - o).double() for n, o in zip(new, old, strict=True)]
    uv = sum(float((ui * vi).sum()) for ui, vi in zip(u, v, strict=True))
    vv = sum(float((vi * vi).sum()) for vi in v)
    uu = sum(float((ui * ui).sum()) for ui in u)
    if vv == 0.0:
        return list(old)
    disc = max(uv * uv - vv * (uu - radius * radius), 0.0)
    t = min(max((-uv + math.sqrt(disc)) / vv, 0.0), 1.0)
    return [o + (n - o) * t for n, o in zip(new, old, strict=True)]


def guard_update(
    old: Sequence[Tensor],
    proposed: Sequence[Tensor],
    anchor: Sequence[Tensor],
    max_step: float | None,
    radius: float | None,
) -> list[Tensor]:
    """The parameters to accept after an optimiser proposed ``proposed`` from ``old``.

    First the per-element step bound, then the radial projection into the trust region. A
    radial projection can move an element by more than the bound; when it does, the update is
    instead the furthest point along the bounded step that stays in the ball, which satisfies
    both (the box and the ball are convex and both contain ``old``).
    """
    bounded = bound_step(proposed, old, max_step) if max_step is not None else list(proposed)
    if radius is None:
        return bounded
    projected = project_to_ball(bounded, anchor, radius)
    if max_step is None:
        return projected
    moved = max(float(_real(p - o).abs().max()) for p, o in zip(projected, old, strict=True))
    if moved <= max_step * (1 + 1e-6):
        return projected
    return _furthest_on_segment(old, bounded, anchor, radius)


def ema_update(anchor: Sequence[Tensor], params: Sequence[Tensor], decay: float) -> list[Tensor]:
    """anchor <- decay * anchor + (1 - decay) * params; decay 0 keeps the anchor fixed here
    by convention (the anchor is then the starting weights and is never moved)."""
    if decay == 0.0:
        return list(anchor)
    return [a * decay + p.detach() * (1.0 - decay) for a, p in zip(anchor, params, strict=True)]


class Checkpoint:
    """An exact copy of what adaptation changes: the adapted parameters, the model's buffers
    (normalisation statistics), the optimiser state and the anchor."""

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        anchor: Sequence[Tensor],
    ) -> None:
        self.params = [p.detach().clone() for p in params]
        self.buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        self.optimizer: dict[str, Any] = copy.deepcopy(optimizer.state_dict())
        self.anchor = [a.clone() for a in anchor]

    def restore(
        self, params: Sequence[nn.Parameter], model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> list[Tensor]:
        """Write the copy back in place; returns the anchor to use from now on."""
        with torch.no_grad():
            for p, saved in zip(params, self.params, strict=True):
                p.copy_(saved)
            for name, b in model.named_buffers():
                if name in self.buffers:
                    b.copy_(self.buffers[name])
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        return [a.clone() for a in self.anchor]
