"""Pure functions of the MAML inner loop: the loss and the gradient step.

The update is kept apart from the class that decides when to call it (as learn2learn's
``maml_update``), so the per-task loop, the vmapped path and a user's own loop share it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

Params = OrderedDict[str, Tensor]
"""Named parameters (or fast weights), in ``model.named_parameters()`` order."""


class NonFiniteError(FloatingPointError):
    """A loss, gradient or adapted weight came out NaN or infinite; the message says which."""


def all_finite(tensors: Iterable[Tensor | None]) -> bool:
    """Whether every element of every tensor is finite (None entries are skipped)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements.

    Args:
        pred: model output, any shape.
        target: the same shape as ``pred`` (no broadcasting: a shape mismatch is a bug).

    Returns:
        A scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"mse: target expected shape {tuple(pred.shape)} (the prediction's), got {tuple(target.shape)}"
        )
    return (pred - target).pow(2).mean()


def sgd_update(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    lrs: float | Mapping[str, Tensor | float],
) -> Params:
    """One inner gradient step, theta' = theta - alpha * grad (Finn et al. 2017, eq. 1).

    With per-parameter ``lrs`` this is the Meta-SGD step theta' = theta - alpha o grad, alpha a
    tensor shaped like theta and learned in the outer loop (Li et al. 2017, eq. 2).

    Args:
        params: current weights by name.
        grads: the inner loss's gradient for every name in ``params``.
        lrs: one learning rate for all, or one (scalar or elementwise tensor) per name.

    Returns:
        New weights by name, in the order of ``params``; the inputs are not modified, so the
        result stays differentiable with respect to ``params``, ``grads`` and ``lrs``.

    References:
        Finn, Abbeel, Levine (2017), Model-Agnostic Meta-Learning, ICML.
        Li, Zhou, Chen, Li (2017), Meta-SGD: Learning to Learn Quickly for Few-Shot Learning.
    """
    if isinstance(lrs, Mapping):
        return OrderedDict((k, p - lrs[k] * grads[k]) for k, p in params.items())
    return OrderedDict((k, p - lrs * grads[k]) for k, p in params.items())


def stack_losses(losses: Tensor | Sequence[Tensor]) -> Tensor:
    """Per-task losses as one (n,) tensor (the vmapped path's already are)."""
    return losses if isinstance(losses, Tensor) else torch.stack(list(losses))


def mean_over_tasks(losses: Tensor | Sequence[Tensor]) -> Tensor:
    """The meta-loss: the mean of the per-task losses (a list as a running sum, in task order)."""
    if isinstance(losses, Tensor):
        return losses.mean()
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total / len(losses)
