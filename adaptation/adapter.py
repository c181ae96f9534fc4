"""``Adapter``: guarded test-time adaptation of any zoo model through its stateful interface.

    adapter = Adapter(model, AdaptationConfig(lr=1e-3, num_steps=5), strategy="online")
    info = adapter.adapt({"x": x, "y": y})         # x (B, T, D) or (B, D)
    loss, steps = adapter.update_step(x, y, state)  # streaming: one window, state held fixed
    pred, state, loss, steps = adapter.predict_then_update(x, y, state)  # predict, then adapt
    feats = adapter.observe(logits, features=x)     # entropy, confidence, feature shift
    with adapter.session():                         # weights restored on exit
        ...

One call of ``adapt`` reads top to bottom: evaluate the strategy's objective, stop if it is not
finite (roll back) or no longer improving (converged), take the gradient of the adapted
parameters, clip it, let the optimiser propose a step, bound and project the step, move the
anchor, repeat; finally evaluate the loss at the new weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from adaptation import guards
from adaptation.config import AdaptationConfig
from adaptation.monitor import FeatureShift, categorical_features, gaussian_features
from adaptation.params import select_parameters
from adaptation.strategies import Objective, Strategy, make_strategy
from models import State

_BATCH_KEYS = ("x", "y", "state", "reset")


def _detach(state: State) -> State:
    return tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, state)


class Adapter:
    """Adapts a model's weights in place at test time, with guards, and can undo it exactly.

    Args:
        model: a zoo model (or any module with ``init_state`` and
            ``forward(x, state, reset=None) -> (y, state)``).
        config: the settings; ``AdaptationConfig()`` when None.
        strategy: a name in ``STRATEGIES``: "none", "online", "tent", or one registered later.

    Attributes:
        params: the adapted (name, parameter) pairs; all others are never touched.
        anchor: the trust region's centre, one tensor per adapted parameter.
        last_info: the dict the latest ``adapt`` / ``update_step`` call returned.

    References:
        Sun et al., "Test-Time Training with Self-Supervision", ICML 2020 (online supervised
        updates at test time); Wang et al., "Tent", ICLR 2021 (entropy minimisation);
        Nagabandi, Clavera et al., ICLR 2019 (adapting a dynamics model on the recent window).
    """

    def __init__(self, model: nn.Module, config: AdaptationConfig | None = None, strategy: str = "online") -> None:
        if not isinstance(model, nn.Module) or not callable(getattr(model, "init_state", None)):
            raise ValueError(f"model: expected an nn.Module with init_state (a zoo model), got {type(model).__name__}")
        config = AdaptationConfig() if config is None else config
        if not isinstance(config, AdaptationConfig):
            raise ValueError(f"config: expected an AdaptationConfig, got {type(config).__name__}")
        self.model = model
        self._init_state = cast(Callable[[int], State], model.init_state)
        self.config = config
        self.strategy: Strategy = make_strategy(strategy)
        param_filter = self.strategy.default_params if config.params is None else config.params
        self.params = select_parameters(model, param_filter)
        tensors = self._tensors()
        if not guards.all_finite(tensors):
            bad = [n for n, p in self.params if not torch.isfinite(p).all()]
            raise ValueError(f"model: expected finite parameters, got non-finite values in {bad}")
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(tensors, lr=config.lr)
        else:
            self.optimizer = torch.optim.SGD(tensors, lr=config.lr)
        self.anchor: list[Tensor] = [p.detach().clone() for p in tensors]
        self.monitor = FeatureShift(decay=config.monitor_decay)
        self.last_info: dict[str, Any] | None = None
        self._start = guards.Checkpoint(tensors, model, self.optimizer, self.anchor)
        self._first: list[tuple[Tensor, State]] = []

    def _tensors(self) -> list[nn.Parameter]:
        return [p for _, p in self.params]

    # ---- adaptation ----------------------------------------------------------------------

    def adapt(
        self, batch: Mapping[str, Any] | tuple[Tensor, Tensor], loss_fn: Objective | None = None
    ) -> dict[str, Any]:
        """Up to ``num_steps`` guarded optimiser steps on one batch.

        Args:
            batch: ``{"x", "y", "state", "reset"}`` (only x required) or an ``(x, y)`` tuple.
                The state, when given, is detached and held fixed for every step.
            loss_fn: ``(outputs, y) -> scalar`` replacing the strategy's objective.

        Returns:
            ``loss`` (at the weights after the call), ``loss_before`` (at the weights before),
            ``steps`` (steps kept), ``updated`` (weights changed), ``converged`` (stopped
            because the improvement fell below ``tolerance``), ``rolled_back`` (a non-finite
            loss, gradient or weight was met, or the loss diverged past ``divergence_factor``:
            the weights, optimiser state and anchor are as before the call), ``rollback_reason``
            ("", "non-finite" or "diverged"), ``grad_norm`` (total gradient norm of the last
            step, before clipping).

        Shapes:
            x: (B, T, D) or (B, D); y: the model's output shape for the default MSE.
        """
        x, y, state, reset = self._unpack(batch)
        if self.strategy.needs_targets and y is None and loss_fn is None:
            raise ValueError(f"batch: strategy {self.strategy.name!r} expected targets y, got none")
        state = self._init_state(x.shape[0]) if state is None else _detach(state)
        objective: Objective = loss_fn if loss_fn is not None else self.strategy.objective

        first: list[tuple[Tensor, State]] = []  # outputs and end state at the incoming weights
        self._first = first

        def evaluate() -> Tensor:
            outputs, end = self.model(x, state, reset=reset)
            if not first:
                first.append((outputs.detach(), _detach(end)))
            loss = objective(outputs, y)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"loss_fn: expected a scalar tensor, got {loss!r}")
            return loss.reshape(())

        cfg = self.config
        info: dict[str, Any] = {
            "loss": math.nan, "loss_before": math.nan, "steps": 0, "updated": False,
            "converged": False, "rolled_back": False, "rollback_reason": "", "grad_norm": math.nan,
        }  # fmt: skip
        if not self.strategy.updates:
            with torch.no_grad():
                info["loss"] = info["loss_before"] = float(evaluate())
            return self._finish(info)

        params = self._tensors()
        start = guards.Checkpoint(params, self.model, self.optimizer, self.anchor)
        previous = math.nan
        for k in range(cfg.num_steps):
            loss = evaluate()
            value = float(loss.detach())
            if k == 0:
                info["loss_before"] = value
            if not math.isfinite(value):
                return self._roll_back(start, info)
            if k > 0 and self._diverged(value, info["loss_before"]):
                return self._roll_back(start, info, "diverged")
            if cfg.tolerance is not None and k > 0 and previous - value < cfg.tolerance:
                info["converged"] = True
                info["loss"] = value
                break
            raw = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
            grads, info["grad_norm"] = guards.clip_by_total_norm(raw, cfg.grad_clip_norm)
            if not math.isfinite(info["grad_norm"]):
                return self._roll_back(start, info)
            self._step(params, grads)
            if not guards.all_finite(params):
                return self._roll_back(start, info)
            info["steps"] = k + 1
            previous = value
        else:
            with torch.no_grad():
                final = float(evaluate())
            if not math.isfinite(final):
                return self._roll_back(start, info)
            if self._diverged(final, info["loss_before"]):
                return self._roll_back(start, info, "diverged")
            info["loss"] = final
            info["converged"] = cfg.tolerance is not None and previous - final < cfg.tolerance
        info["updated"] = info["steps"] > 0
        return self._finish(info)

    def _step(self, params: list[nn.Parameter], grads: list[Tensor]) -> None:
        """One optimiser step, then the step bound and trust region, then the anchor update."""
        cfg = self.config
        guarded = cfg.max_param_step is not None or cfg.trust_region is not None
        old = [p.detach().clone() for p in params] if guarded else []
        outside: list[Tensor | None] = [p.grad for p in params]  # the caller's gradients stay theirs
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.optimizer.step()
        for p, kept in zip(params, outside, strict=True):
            p.grad = kept
        if guarded:  # without a bound or trust region the proposal is accepted as it is
            with torch.no_grad():
                proposed = [p.detach() for p in params]
                accepted = guards.guard_update(old, proposed, self.anchor, cfg.max_param_step, cfg.trust_region)
                for p, a in zip(params, accepted, strict=True):
                    p.copy_(a)
        self.anchor = guards.ema_update(self.anchor, params, cfg.anchor_decay)

    def _diverged(self, loss: float, before: float) -> bool:
        """The loss rose past ``divergence_factor`` x the starting loss (in magnitude)."""
        factor = self.config.divergence_factor
        return factor is not None and loss - before > (factor - 1.0) * abs(before)

    def _roll_back(self, start: guards.Checkpoint, info: dict[str, Any], reason: str = "non-finite") -> dict[str, Any]:
        self.anchor = start.restore(self._tensors(), self.model, self.optimizer)
        info.update(loss=info["loss_before"], steps=0, updated=False, converged=False, rolled_back=True,
                    rollback_reason=reason)  # fmt: skip
        return self._finish(info)

    def _finish(self, info: dict[str, Any]) -> dict[str, Any]:
        self.last_info = info
        return info

    def update_step(self, x: Tensor, y: Tensor, state: State = None) -> tuple[float, int]:
        """Adapt on one window of a stream, from the state the window starts in.

        The incoming ``state`` is detached and held fixed, so every inner step sees the same
        state; the caller carries the state forward itself (``model(x, state)``).

        Returns:
            ``(loss, steps)``: the loss on the window at the weights it arrived to (the
            prequential, one-step-ahead error, which adaptation on this window cannot have
            lowered), and the number of steps kept. The full dict is in ``last_info``.
        """
        info = self.adapt({"x": x, "y": y, "state": state})
        return info["loss_before"], info["steps"]

    def predict_then_update(
        self, x: Tensor, y: Tensor, state: State = None, reset: Tensor | None = None
    ) -> tuple[Tensor, State, float, int]:
        """One prequential step on a stream window: predict it, then adapt on it.

        Equal to ``model(x, state, reset=reset)`` under ``no_grad`` followed by
        ``adapt({"x", "y", "state", "reset"})``, but the prediction is the adaptation's first
        forward pass (the same weights, inputs and state), so the window is run once less. (A
        model whose kernels differ with autograd on, as torch's LSTM on CPU, gives outputs
        equal to the ``no_grad`` ones up to float rounding.)

        Returns:
            ``(outputs, end_state, loss, steps)``: the outputs and the state after the window at
            the weights the window arrived to (both detached), the loss there and the number of
            steps kept. The full dict is in ``last_info``.

        Shapes:
            x: (B, T, D); y: the outputs' shape; reset: (B, T) bool or None.
        """
        info = self.adapt({"x": x, "y": y, "state": state, "reset": reset})
        outputs, end = self._first[0]
        return outputs, end, info["loss_before"], info["steps"]

    # ---- monitoring ----------------------------------------------------------------------

    def observe(
        self,
        outputs: Tensor | None = None,
        *,
        log_std: Tensor | None = None,
        features: Tensor | None = None,
    ) -> dict[str, float]:
        """Meta-features of one batch, for monitoring and for deciding when to adapt.

        Args:
            outputs: logits (..., C) of a categorical model, or the mean (..., D) of a Gaussian
                one when ``log_std`` is given; None to measure only feature shift.
            log_std: the Gaussian's log standard deviation, broadcastable to ``outputs``.
            features: inputs or hidden features (..., F) to compare against the moving
                statistics of those seen before (updated afterwards).

        Returns:
            ``entropy`` and ``confidence`` (categorical) or ``variance`` and ``entropy``
            (Gaussian), and ``feature_shift`` (NaN on the first batch) when features are given.
        """
        if outputs is None and features is None:
            raise ValueError("observe: expected outputs and/or features, got neither")
        feats: dict[str, float] = {}
        if outputs is not None:
            if log_std is None:
                feats.update(categorical_features(outputs))
            else:
                feats.update(gaussian_features(outputs, log_std))
        if features is not None:
            feats["feature_shift"] = self.monitor.update(features)
        return feats

    # ---- undo ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Restore the weights, buffers, optimiser state and anchor the Adapter started from."""
        self.anchor = self._start.restore(self._tensors(), self.model, self.optimizer)

    @contextlib.contextmanager
    def session(self) -> Iterator[Adapter]:
        """Restore the weights, buffers, optimiser state and anchor on exit (even on error) to
        what they were on entry, so adaptation during one evaluation never leaks into the next."""
        entry = guards.Checkpoint(self._tensors(), self.model, self.optimizer, self.anchor)
        try:
            yield self
        finally:
            self.anchor = entry.restore(self._tensors(), self.model, self.optimizer)

    # ---- input ---------------------------------------------------------------------------

    @staticmethod
    def _unpack(
        batch: Mapping[str, Any] | tuple[Tensor, Tensor],
    ) -> tuple[Tensor, Tensor | None, State, Tensor | None]:
        if isinstance(batch, Mapping):
            unknown = sorted(set(batch) - set(_BATCH_KEYS))
            if unknown or "x" not in batch:
                raise ValueError(f"batch: expected keys x (required), y, state, reset, got {sorted(batch)}")
            x, y, state, reset = (batch.get(k) for k in _BATCH_KEYS)
        elif isinstance(batch, tuple | list) and len(batch) == 2:
            (x, y), state, reset = batch, None, None
        else:
            raise ValueError(f"batch: expected a mapping with key x or an (x, y) tuple, got {type(batch).__name__}")
        if not isinstance(x, Tensor) or x.dim() not in (2, 3):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"batch.x: expected a tensor (B, T, D) or (B, D), got {shape}")
        if y is not None and not isinstance(y, Tensor):
            raise ValueError(f"batch.y: expected a tensor or None, got {type(y).__name__}")
        return x, y, state, reset
