"""``MAMLConfig``: the settings of ``MetaMAML``, checked when they are made."""

from __future__ import annotations

import dataclasses
import math

NONFINITE_POLICIES = ("skip", "raise")
"""Valid ``MAMLConfig.nonfinite`` values."""


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Settings of MetaMAML (the loss function is passed separately)."""

    inner_lr: float = 0.01
    """alpha: step size of the inner SGD steps (the initial value of every lr with meta_sgd)."""
    outer_lr: float = 1e-3
    """Adam learning rate of the outer (meta) update."""
    num_inner_steps: int = 1
    """Inner gradient steps per task; 0 trains the initialisation on the query directly."""
    first_order: bool = False
    """Drop second derivatives through the inner steps (FOMAML)."""
    meta_sgd: bool = False
    """Learn one inner learning rate per parameter element, meta-trained with the weights."""
    query_from_support_state: bool = False
    """Start the query from the adapted model's state at the end of the support sequence."""
    vectorize: bool = True
    """Run a meta-batch's tasks together under torch.func.vmap; False: the per-task loop."""
    nonfinite: str = "skip"
    """What a meta-update does with a task whose query loss is not finite (NaN or inf data, a
    diverging inner step): ``skip`` leaves it out of that step's meta-loss and counts it in
    ``MetaMAML.skipped_tasks``; ``raise`` raises ``NonFiniteError``. Either way the weights and
    the optimiser state are never updated with a non-finite gradient."""

    def __post_init__(self) -> None:
        for name in ("inner_lr", "outer_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ValueError(f"MAMLConfig.{name}: expected a non-negative float (finite), got {value!r}")
        steps = self.num_inner_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"MAMLConfig.num_inner_steps: expected an int >= 0, got {steps!r}")
        for name in ("first_order", "meta_sgd", "query_from_support_state", "vectorize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MAMLConfig.{name}: expected a bool, got {getattr(self, name)!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            valid = list(NONFINITE_POLICIES)
            raise ValueError(f"MAMLConfig.nonfinite: expected one of {valid}, got {self.nonfinite!r}")
