"""Sampling-based planners over action sequences: random shooting and the cross-entropy method.

A planner sees the world only through ``score(actions (N, H, A)) -> (N,)``, the predicted return of
each candidate sequence, so the same planner drives a learned model, the true dynamics, or a toy
cost. Actions are boxed: every sample is clipped to ``[low, high]``.

Candidates whose predicted return is not finite (nan, +inf or -inf: a model that blew up in
imagination) rank below every finite one: never the chosen sequence, never a CEM elite while a
finite candidate exists. When no candidate of a round is finite there is no plan to act on, and the
planner raises ``PlanningError`` naming the round and the counts (the control loop adds the step)
instead of acting on an arbitrary candidate.

References:
    Nagabandi, Kahn, Fearing, Levine (2018), "Neural Network Dynamics for Model-Based Deep RL
    with Model-Free Fine-Tuning": random shooting MPC with a learned dynamics model.
    Chua, Calandra, McAllister, Levine (2018), "Deep RL in a Handful of Trials using Probabilistic
    Dynamics Models" (PETS): CEM over action sequences, warm-started by shifting the last mean.
    Rubinstein (1999), "The Cross-Entropy Method for Combinatorial and Continuous Optimization".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor], Tensor]
"""score(actions (N, H, A)) -> predicted return (N,); higher is better."""

METHODS = ("random", "cem")


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """Settings of one planner.

    Attributes:
        method: "random" (random shooting: one round of uniform samples) or "cem".
        horizon: H, steps each candidate sequence looks ahead.
        candidates: N, sequences scored per round.
        iterations: CEM rounds per plan (random shooting uses one round whatever this says).
        elites: CEM: the best sequences of a round that refit the sampling distribution.
        momentum: CEM: weight of the previous mean / std in each refit (0: the elites' statistics).
    """

    method: str = "cem"
    horizon: int = 10
    candidates: int = 64
    iterations: int = 3
    elites: int = 8
    momentum: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"planner method: expected one of {list(METHODS)}, got {self.method!r}")
        for name in ("horizon", "candidates", "iterations", "elites"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"planner {name}: expected an int >= 1, got {value!r}")
        if self.elites > self.candidates:
            raise ValueError(f"planner elites: expected at most candidates ({self.candidates}), got {self.elites}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"planner momentum: expected a float in [0, 1), got {self.momentum!r}")

    @property
    def rounds(self) -> int:
        """Scoring rounds per plan."""
        return 1 if self.method == "random" else self.iterations


def _check_bounds(low: Tensor, high: Tensor) -> None:
    if low.dim() != 1 or low.shape != high.shape:
        raise ValueError(f"action bounds: expected low and high of one shape (A,), got {tuple(low.shape)} "
                         f"and {tuple(high.shape)}")  # fmt: skip
    if not bool((high > low).all()):
        raise ValueError(f"action bounds: expected high > low everywhere, got low {low.tolist()} high {high.tolist()}")


class PlanningError(RuntimeError):
    """No candidate of a planning round scored a finite return, so there is no plan to act on.

    Raised by the planners; the control loop re-raises it with the control step (``at_step``), and
    a controller may add what it found non-finite. The message is one line.

    Attributes:
        cause: what went wrong, e.g. "all 64 candidate returns are non-finite (64 nan) in CEM round
            1 of 2".
        step: the episode's control step (0-based) at which it happened; None until the loop sets it.
    """

    def __init__(self, cause: str, step: int | None = None) -> None:
        self.cause, self.step = cause, step
        super().__init__(cause if step is None else f"control step {step}: {cause}")

    def __reduce__(self) -> tuple[type[PlanningError], tuple[str, int | None]]:
        return (PlanningError, (self.cause, self.step))  # keeps both fields through pickling (worker -> parent)

    def at_step(self, step: int) -> PlanningError:
        """The same error, naming the control step."""
        return PlanningError(self.cause, step)

    def because(self, detail: str) -> PlanningError:
        """The same error with ``detail`` appended to its cause."""
        return PlanningError(f"{self.cause}; {detail}", self.step)


def _check_scores(scores: Tensor, n: int, where: str) -> Tensor:
    """``scores`` with every non-finite value as -inf (ranked last); PlanningError if none is finite."""
    if scores.shape != (n,):
        raise ValueError(f"score: expected one return per candidate, shape ({n},), got {tuple(scores.shape)}")
    finite = torch.isfinite(scores)
    if not bool(finite.any()):
        counts = {"nan": int(scores.isnan().sum()), "+inf": int((scores == torch.inf).sum()),
                  "-inf": int((scores == -torch.inf).sum())}  # fmt: skip
        kinds = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        raise PlanningError(f"all {n} candidate returns are non-finite ({kinds}) in {where}")
    return torch.where(finite, scores, torch.full_like(scores, -torch.inf))


def random_shooting(score: ScoreFn, low: Tensor, high: Tensor, config: PlannerConfig,
                    generator: torch.Generator) -> Tensor:  # fmt: skip
    """The best of N uniform random action sequences (Nagabandi et al. 2018).

    Args:
        score: predicted return of candidate sequences.
        low, high: action bounds, (A,) each.
        config: horizon and candidates are used.
        generator: the random stream of the samples.

    Returns:
        The best sequence, (H, A): the best finite-scored one.

    Raises:
        PlanningError: when no candidate scores a finite return.
    """
    _check_bounds(low, high)
    n, h = config.candidates, config.horizon
    actions = low + (high - low) * torch.rand(n, h, low.shape[0], generator=generator, dtype=low.dtype)
    scores = _check_scores(score(actions), n, "random shooting")
    return actions[scores.argmax()]


def cem(score: ScoreFn, low: Tensor, high: Tensor, config: PlannerConfig, generator: torch.Generator,
        mean: Tensor | None = None) -> Tensor:  # fmt: skip
    """Cross-entropy method over action sequences (Chua et al. 2018).

    Each round draws N sequences from a diagonal Gaussian clipped to the bounds, keeps the
    ``elites`` best, and moves the mean and standard deviation towards theirs. Candidates with a
    non-finite score are never elites: when fewer than ``elites`` are finite, the finite ones refit.

    Args:
        score: predicted return of candidate sequences.
        low, high: action bounds, (A,) each.
        config: horizon, candidates, iterations, elites and momentum are used.
        generator: the random stream of the samples.
        mean: (H, A) initial mean (a warm start); default the middle of the bounds.

    Returns:
        The final mean, (H, A).

    Raises:
        PlanningError: when no candidate of a round scores a finite return.
    """
    _check_bounds(low, high)
    n, h, a = config.candidates, config.horizon, low.shape[0]
    mid, half = (low + high) / 2, (high - low) / 2
    mu = mid.expand(h, a).clone() if mean is None else mean.clone()
    if mu.shape != (h, a):
        raise ValueError(f"cem mean: expected shape ({h}, {a}), got {tuple(mu.shape)}")
    std = half.expand(h, a).clone()
    for i in range(config.iterations):
        noise = torch.randn(n, h, a, generator=generator, dtype=low.dtype)
        actions = torch.maximum(torch.minimum(mu + std * noise, high), low)  # (N, H, A)
        scores = _check_scores(score(actions), n, f"CEM round {i + 1} of {config.iterations}")
        top = scores.topk(config.elites).indices
        top = top[scores[top] > -torch.inf]  # only finite-scored candidates refit (at least one is)
        elite = actions[top]  # (E, H, A), E <= elites
        m = config.momentum
        mu = m * mu + (1 - m) * elite.mean(0)
        std = m * std + (1 - m) * elite.std(0, correction=0)
    return mu


class Planner:
    """Receding-horizon planning: a plan per control step, its first action executed.

    CEM is warm-started from the previous plan shifted by one step (the new last step starts at
    the middle of the bounds), as in PETS; random shooting starts afresh every step.

    Args:
        config: the planner's settings.
        low, high: action bounds, (A,) each.
        seed: seeds the planner's own random stream.
    """

    def __init__(self, config: PlannerConfig, low: Tensor, high: Tensor, seed: int) -> None:
        _check_bounds(low, high)
        self.config = config
        self.low, self.high = low, high
        self.generator = torch.Generator().manual_seed(seed)
        self._previous: Tensor | None = None

    def reset(self) -> None:
        """Forget the warm start (at the start of an episode)."""
        self._previous = None

    def plan(self, score: ScoreFn) -> Tensor:
        """The first action of the best plan, (A,).

        Raises:
            PlanningError: when every candidate of a round scores a non-finite return (the warm
                start is left as it was).
        """
        if self.config.method == "random":
            return random_shooting(score, self.low, self.high, self.config, self.generator)[0]
        mean = None
        if self._previous is not None:
            mid = ((self.low + self.high) / 2)[None]
            mean = torch.cat([self._previous[1:], mid])
        plan = cem(score, self.low, self.high, self.config, self.generator, mean)
        self._previous = plan
        return plan[0]
