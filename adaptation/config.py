"""``AdaptationConfig``: every setting of the test-time Adapter, frozen and validated."""

from __future__ import annotations

import dataclasses
import math
import re

ParamFilter = str | tuple[str, ...] | None
"""Which parameters adapt: None (the strategy's default), "all", "norm" (normalisation layers'
affine parameters), a regular expression searched in each parameter name, or a tuple of
substrings (a parameter adapts when its name contains any of them)."""

OPTIMIZERS = ("adam", "sgd")


def _positive(name: str, value: object, *, optional: bool) -> None:
    if optional and value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and isinstance(value, int | float) and math.isfinite(value) and value > 0):
        expected = "a positive finite number or None" if optional else "a positive finite number"
        raise ValueError(f"AdaptationConfig.{name}: expected {expected}, got {value!r}")


def _unit_interval(name: str, value: object) -> None:
    """Accept None or a number in [0, 1) (a decay factor)."""
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and isinstance(value, int | float) and 0.0 <= value < 1.0):
        raise ValueError(f"AdaptationConfig.{name}: expected None or a number in [0, 1), got {value!r}")


@dataclasses.dataclass(frozen=True)
class AdaptationConfig:
    """Settings of ``Adapter``; every field is checked on construction.

    Attributes:
        lr: optimiser learning rate.
        num_steps: the most optimiser steps one ``adapt`` / ``update_step`` call takes.
        optimizer: "adam" or "sgd" (plain, no momentum); its state persists across calls
            until ``Adapter.reset``.
        grad_clip_norm: clip the gradient of the adapted parameters to this total L2 norm
            before the step; None: no clipping.
        max_param_step: bound on how far any single parameter element may move in one step
            (an L-infinity bound on each step); None: unbounded.
        trust_region: L2 radius, over all adapted parameters together, of the ball around the
            anchor that the parameters are projected back into after every step; None: off.
        ema_decay: the anchor is an exponential moving average of the adapted parameters,
            anchor <- ema_decay * anchor + (1 - ema_decay) * params after every step, so the
            trust region follows slow drift; None or 0: the anchor stays at the starting
            weights.
        tolerance: stop early once the loss improves by less than this from one step to the
            next (the call then reports converged=True); None: always take ``num_steps`` steps.
        divergence_factor: roll the call back when the loss after a step exceeds the loss
            before the call by more than (factor - 1) x its magnitude, i.e. for a positive
            loss, when it grows above factor x the starting loss; None: roll back only on
            non-finite values.
        params: which parameters adapt (see ``ParamFilter``): None for the strategy's default
            ("all" for ``online``, "norm" for ``tent``), "all", "norm", a regular expression
            searched in each parameter name, or a tuple of name substrings.
        monitor_decay: decay of the exponential moving input / feature statistics that
            ``Adapter.observe`` measures feature shift against.
    """

    lr: float = 1e-3
    num_steps: int = 1
    optimizer: str = "adam"
    grad_clip_norm: float | None = 1.0
    max_param_step: float | None = None
    trust_region: float | None = None
    ema_decay: float | None = None
    tolerance: float | None = None
    divergence_factor: float | None = 1000.0
    params: ParamFilter = None
    monitor_decay: float = 0.9

    def __post_init__(self) -> None:
        _positive("lr", self.lr, optional=False)
        n = self.num_steps
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"AdaptationConfig.num_steps: expected a positive int, got {n!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"AdaptationConfig.optimizer: expected one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        _positive("grad_clip_norm", self.grad_clip_norm, optional=True)
        _positive("max_param_step", self.max_param_step, optional=True)
        _positive("trust_region", self.trust_region, optional=True)
        _unit_interval("ema_decay", self.ema_decay)
        tol = self.tolerance
        if tol is not None and (not isinstance(tol, int | float) or isinstance(tol, bool) or not 0.0 <= tol < math.inf):
            raise ValueError(f"AdaptationConfig.tolerance: expected None or a number >= 0, got {tol!r}")
        factor = self.divergence_factor
        if factor is not None and (not isinstance(factor, int | float) or isinstance(factor, bool)
                                   or not 1.0 < factor < math.inf):  # fmt: skip
            expected = "None or a finite number > 1"
            raise ValueError(f"AdaptationConfig.divergence_factor: expected {expected}, got {factor!r}")
        object.__setattr__(self, "params", _check_params(self.params))
        if self.monitor_decay is None:
            raise ValueError("AdaptationConfig.monitor_decay: expected a number in [0, 1), got None")
        _unit_interval("monitor_decay", self.monitor_decay)

    @property
    def anchor_decay(self) -> float:
        """The EMA decay of the anchor; 0.0 when the anchor is fixed at the starting weights."""
        return float(self.ema_decay or 0.0)


def _check_params(params: object) -> ParamFilter:
    """Validate ``params`` and return it normalised (a list of substrings becomes a tuple)."""
    if params is None:
        return None
    if isinstance(params, str):
        if not params:
            raise ValueError("AdaptationConfig.params: expected a non-empty filter, got ''")
        try:
            re.compile(params)
        except re.error as err:
            raise ValueError(
                f"AdaptationConfig.params: expected a valid regular expression, got {params!r} ({err})"
            ) from None
        return params
    if isinstance(params, list | tuple) and params and all(isinstance(p, str) and p for p in params):
        return tuple(params)
    raise ValueError(
        "AdaptationConfig.params: expected None, 'all', 'norm', a regex or a non-empty sequence "
        f"of name substrings, got {params!r}"
    )
