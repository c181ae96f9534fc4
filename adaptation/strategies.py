"""Adaptation strategies as data: name -> ``Strategy`` class.

A strategy says three things: whether it updates at all, the objective it minimises on a batch
(model outputs and, when it is supervised, observed targets), and which parameters it adapts by
default. ``@register_strategy("name")`` adds one, on a ``Strategy`` subclass or on a plain
objective function ``(outputs, targets) -> scalar loss``::

    @register_strategy("mae")
    def mae(outputs, targets):
        return (outputs - targets).abs().mean()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor

from adaptation.config import ParamFilter

Objective = Callable[[Tensor, Tensor | None], Tensor]
"""``(outputs, targets) -> scalar loss``; targets is None for unsupervised objectives."""


class Strategy:
    """What a strategy decides; the ``Adapter`` decides when and how safely to step.

    Attributes:
        name: the registry key.
        updates: False for a strategy that only measures (``none``).
        needs_targets: whether ``objective`` needs observed targets ``y``.
        default_params: the ``ParamFilter`` used when the config's ``params`` is None.
    """

    name: ClassVar[str] = ""
    updates: ClassVar[bool] = True
    needs_targets: ClassVar[bool] = True
    default_params: ClassVar[ParamFilter] = "all"

    def objective(self, outputs: Tensor, targets: Tensor | None) -> Tensor:
        """The scalar loss to minimise on this batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement objective")


STRATEGIES: dict[str, type[Strategy]] = {}

S = TypeVar("S")


def register_strategy(name: str) -> Callable[[S], S]:
    """Decorator adding a ``Strategy`` subclass, or an objective function, under ``name``.

    A function becomes a supervised-or-not strategy that adapts all parameters (override with
    ``AdaptationConfig.params``); it receives targets as given (None when the batch has none).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_strategy: name expected a non-empty str, got {name!r}")
    if name in STRATEGIES:
        raise ValueError(f"register_strategy: name {name!r} is already registered; known: {sorted(STRATEGIES)}")

    def add(obj: S) -> S:
        if isinstance(obj, type) and issubclass(obj, Strategy):
            cls: type[Strategy] = obj
        elif callable(obj) and not isinstance(obj, type):
            fn: Objective = obj

            def objective(self: Strategy, outputs: Tensor, targets: Tensor | None) -> Tensor:
                return fn(outputs, targets)

            cls = type(f"{name}_strategy", (Strategy,), {"objective": objective, "needs_targets": False})
        else:
            raise ValueError(
                f"register_strategy({name!r}): expected a Strategy subclass or an objective function, got {obj!r}"
            )
        cls.name = name
        STRATEGIES[name] = cls
        return obj

    return add


def make_strategy(name: str) -> Strategy:
    """An instance of the strategy registered as ``name``; ValueError listing the known names."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy: unknown name {name!r}; expected one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]()


def mse(outputs: Tensor, targets: Tensor | None) -> Tensor:
    """Mean squared error; ``targets`` must have the outputs' shape."""
    if targets is None:
        raise ValueError("y: expected targets for a supervised objective, got None")
    if targets.shape != outputs.shape:
        raise ValueError(f"y: expected shape {tuple(outputs.shape)} (the model's output), got {tuple(targets.shape)}")
    return (outputs - targets).pow(2).mean()


def categorical_entropy(logits: Tensor) -> Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dimension; shape logits[..., 0]."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


@register_strategy("none")
class NoAdaptation(Strategy):
    """No update: the control arm. Reports the supervised loss when targets are given."""

    updates = False
    needs_targets = False

    def objective(self, outputs: Tensor, targets: Tensor | None) -> Tensor:
        if targets is None:
            return torch.full((), float("nan"), dtype=outputs.dtype, device=outputs.device)
        return mse(outputs, targets)


@register_strategy("online")
class OnlineSupervised(Strategy):
    """Supervised test-time training on observed targets (MSE unless ``loss_fn`` is given)."""

    def objective(self, outputs: Tensor, targets: Tensor | None) -> Tensor:
        return mse(outputs, targets)


@register_strategy("tent")
class Tent(Strategy):
    """Entropy minimisation of categorical predictions (outputs are logits).

    Adapts only the normalisation layers' affine parameters by default, as Tent does. Tent also
    normalises with the test batch's statistics: for BatchNorm that means calling
    ``model.train()`` before adapting (the Adapter leaves the mode as it finds it, and restores
    the running statistics with the weights); the zoo's LayerNorms use each sample's own
    statistics in either mode.

    References:
        Wang, Shelhamer, Liu, Olshausen, Darrell. "Tent: Fully Test-Time Adaptation by Entropy
        Minimization", ICLR 2021 (loss: mean over samples of H(y_hat) = -sum_c p_c log p_c).
    """

    needs_targets = False
    default_params = "norm"

    def objective(self, outputs: Tensor, targets: Tensor | None) -> Tensor:
        return categorical_entropy(outputs).mean()
