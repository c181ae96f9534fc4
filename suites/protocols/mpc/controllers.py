"""Controllers: what acts in an episode. Random actions, MPC with a known dynamics function, and
MPC with a zoo model that adapts to the recent past.

A controller is reset with the first observation, asked for an action, and shown each real
transition; ``observe`` returns the one-step error of its model on that transition (None without
a model), so the control loop can record the error along the episode. When no candidate plan
scores a finite return, ``act`` raises the planner's ``PlanningError`` with what the controller
found non-finite (the observation, the model's state or weights), and the loop adds the step.

``ModelController`` carries the model's state along the real history, one step per real
transition, and starts every imagined candidate rollout from it. Adaptation (GrBAL, Nagabandi,
Clavera et al. 2019): every ``every`` steps, once ``window`` = M steps are observed, the model
adapts on the last M transitions, starting from the state it had M steps ago:
- ``maml``: fast weights after k inner SGD steps from the meta-learned weights (MetaMAML.adapt,
  first order: no meta-gradient is needed at test time); each adaptation starts again from the
  meta-learned weights, as in GrBAL;
- ``adapter``: the Adapter's guarded optimiser steps on the model's own weights, accumulating
  over the episode (Adapter.update_step).
After a change of weights the current state is recomputed by running the new weights over the
same M steps, so the state the planner starts from belongs to the weights it plans with.

References:
    Nagabandi, Clavera, Liu, Fearing, Abbeel, Levine, Finn (2019), "Learning to Adapt in Dynamic,
    Real-World Environments through Meta-Reinforcement Learning", ICLR (GrBAL).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor
from torch.utils._pytree import tree_leaves

from adaptation import Adapter
from meta import MetaMAML
from models import SequenceModel, State
from suites.data import Normalizer
from suites.protocols.mpc.planners import Planner, PlanningError
from suites.protocols.mpc.rollout import DynamicsFn, ModelDynamics, RewardFn, imagined_returns


class Controller(Protocol):
    """The control loop's view of a controller."""

    def reset(self, obs: np.ndarray) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...

    def observe(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float | None: ...


def box_bounds(space: spaces.Space) -> tuple[Tensor, Tensor]:
    """(low, high) float32 tensors of a 1-D Box action space; ValueError otherwise."""
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"action space: expected a 1-D Box for planning, got {space}")
    return torch.as_tensor(space.low, dtype=torch.float32), torch.as_tensor(space.high, dtype=torch.float32)


def _tensor(x: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _non_finite(named: dict[str, object]) -> str:
    """Which of the named tensors (or pytrees of tensors) hold a non-finite value, as a clause."""
    bad = [name for name, value in named.items()
           if any(isinstance(t, Tensor) and not bool(torch.isfinite(t).all()) for t in tree_leaves(value))]  # fmt: skip
    if bad:
        return "non-finite: " + ", ".join(bad)
    return "finite: " + ", ".join(named) + " (the imagined rollouts diverge)"


class RandomController:
    """Uniform random actions: the floor every planner should beat.

    Args:
        space: the action space (a Box).
        seed: seeds the action stream.
    """

    def __init__(self, space: spaces.Space, seed: int) -> None:
        low, high = box_bounds(space)
        self.low, self.high = low.numpy().astype(np.float64), high.numpy().astype(np.float64)
        self.rng = np.random.default_rng(seed)

    def reset(self, obs: np.ndarray) -> None:
        """Nothing to forget."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        return (self.low + (self.high - self.low) * self.rng.random(self.low.shape)).astype(np.float32)

    def observe(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float | None:
        return None


class DynamicsController:
    """MPC with a stateless dynamics function (e.g. the true equations of motion).

    Args:
        dynamics: dynamics(obs (N, o), action (N, A), ()) -> (next_obs, ()).
        reward: the task's batched reward.
        planner: the planner (its bounds are the action bounds).
    """

    def __init__(self, dynamics: DynamicsFn, reward: RewardFn, planner: Planner) -> None:
        self.dynamics, self.reward, self.planner = dynamics, reward, planner

    def reset(self, obs: np.ndarray) -> None:
        self.planner.reset()

    def act(self, obs: np.ndarray) -> np.ndarray:
        o = _tensor(obs)
        try:
            action = self.planner.plan(lambda a: imagined_returns(self.dynamics, self.reward, o, (), a))
        except PlanningError as err:
            raise err.because(_non_finite({"the observation": o})) from None
        return action.numpy()

    def observe(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float | None:
        return None


class ModelController:
    """MPC with a zoo dynamics model, optionally adapted online (see the module docstring).

    Args:
        model: the trained model (normalised [obs, action] -> normalised obs change).
        normalizer: the statistics it was trained with.
        reward: the task's batched reward.
        planner: the planner.
        maml: adapt with this MetaMAML's inner loop (arm ``maml``); exclusive with ``adapter``.
        adapter: adapt with this Adapter (arm ``maml+adapter``).
        window: M, the recent transitions an adaptation uses.
        every: steps between adaptations.
        maml_steps: k, inner SGD steps per MAML adaptation.
    """

    def __init__(self, model: SequenceModel, normalizer: Normalizer, reward: RewardFn, planner: Planner,
                 maml: MetaMAML | None = None, adapter: Adapter | None = None, window: int = 16, every: int = 1,
                 maml_steps: int = 1) -> None:  # fmt: skip
        if maml is not None and adapter is not None:
            raise ValueError("ModelController: expected at most one of maml and adapter, got both")
        for name, value in (("window", window), ("every", every), ("maml_steps", maml_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelController {name}: expected an int >= 1, got {value!r}")
        self.model, self.normalizer, self.reward, self.planner = model, normalizer, reward, planner
        self.maml, self.adapter = maml, adapter
        self.window, self.every, self.maml_steps = window, every, maml_steps
        self._fast: ModelDynamics | None = None  # the latest MAML fast weights, in one model copy kept across episodes
        self.reset(None)

    def reset(self, obs: np.ndarray | None) -> None:
        """Fresh state and history; the meta-learned weights again (the Adapter's are restored)."""
        if self.adapter is not None:
            self.adapter.reset()
        self.dynamics = ModelDynamics(self.model, self.normalizer)
        self.state: State = self.model.init_state(1)
        self.t = 0
        # the last M inputs (1, D), targets (1, o) and the states before them
        self.xs: deque[Tensor] = deque(maxlen=self.window)
        self.ys: deque[Tensor] = deque(maxlen=self.window)
        self.states: deque[State] = deque(maxlen=self.window)
        self.planner.reset()

    def act(self, obs: np.ndarray) -> np.ndarray:
        o = _tensor(obs)
        try:
            action = self.planner.plan(lambda a: imagined_returns(self.dynamics, self.reward, o, self.state, a))
        except PlanningError as err:
            # MAML's fast weights when it has adapted; otherwise the model's own (which the Adapter updates)
            fast = self.dynamics.weights
            weights = ("the MAML-adapted weights", fast) if fast is not None else (
                "the model's weights", dict(self.model.named_parameters()))  # fmt: skip
            named = {"the observation": o, "the model's state": self.state, weights[0]: weights[1]}
            raise err.because(_non_finite(named)) from None
        return action.numpy()

    def observe(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float | None:
        """Step the model's state over the real transition; adapt when due. Returns the model's
        one-step squared error (mean over features, normalised targets) before any adaptation on it."""
        o, n = _tensor(obs), _tensor(next_obs)
        x = self.dynamics.inputs(o, _tensor(action))[None]  # (1, D)
        y = self.normalizer.apply_targets(n - o)[None]  # (1, o)
        with torch.no_grad():
            pred, next_state = self.dynamics.predict(x, self.state)
        error = float((pred - y).pow(2).mean())
        self.xs.append(x)
        self.ys.append(y)
        self.states.append(self.state)
        self.state = next_state
        self.t += 1
        adapts = self.maml is not None or self.adapter is not None
        if adapts and self.t >= self.window and self.t % self.every == 0:
            self._adapt()
        return error

    def _adapt(self) -> None:
        xw, yw = torch.stack(list(self.xs), 1), torch.stack(list(self.ys), 1)  # (1, M, D), (1, M, o)
        start = self.states[0]
        if self.maml is not None:
            fast = self.maml.adapt(xw, yw, start, num_steps=self.maml_steps, first_order=True)
            if self._fast is None or self._fast.model is not self.model or self._fast.normalizer is not self.normalizer:
                self._fast = ModelDynamics(self.model, self.normalizer)
            self._fast.load({k: v.detach() for k, v in fast.items()})
            self.dynamics = self._fast
        elif self.adapter is not None:
            self.adapter.update_step(xw, yw, start)
        with torch.no_grad():
            _, self.state = self.dynamics.predict(xw, start)
