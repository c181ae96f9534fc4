"""Task parameters and the parameter spaces they are drawn from, with train / test splits.

Three kinds of space cover every distribution here:

- ``BoxSpace``: independent uniform ranges (pendulum mass and length, cheetah scales, velocity);
- ``DiscSpace``: a point uniform in a disc (the ant goal, as in ProMP's ``ant_rand_goal``);
- ``ChoiceSpace``: a finite set of values, split into training and held-out choices (crippled
  joint or leg), or shared by both splits when there is nothing to hold out (direction +1 / -1).

Continuous spaces draw the held-out test set from a fixed, separate random stream, and training
draws that land within ``TEST_GAP`` (relative to the range) of a test point are rejected, so the
two sets are disjoint by construction while both cover the same range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np

MAX_TEST_TASKS = 100
"""Size of each continuous distribution's fixed test pool; ``test_tasks(n)`` returns its first n."""

TEST_GAP = 1e-6
"""A training draw closer than this to a test point (L-inf, in units of each range) is redrawn."""


@dataclasses.dataclass(frozen=True)
class TaskParams(Mapping[str, float]):
    """One task: the name of its distribution and its parameter values, read like a dict.

    ``gym.make(env_id, **params)`` and ``env.set_task(params)`` both accept it; it is hashable,
    so sets of tasks can be compared.

    Attributes:
        task: the distribution's name, e.g. ``"pendulum-mass-length"``.
        pairs: (parameter name, value) pairs in the space's order.
    """

    task: str
    pairs: tuple[tuple[str, float], ...]

    def __getitem__(self, key: str) -> float:
        for name, value in self.pairs:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.pairs)
        return f"TaskParams({self.task!r}, {inner})"


def _number(task: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"task {task!r}: parameter {name} expected a number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"task {task!r}: parameter {name} expected a finite number, got {value!r}")
    return float(value)


def _check_names(task: str, names: Sequence[str], values: Mapping[str, object]) -> None:
    missing = [n for n in names if n not in values]
    unknown = [n for n in values if n not in names]
    if missing or unknown:
        raise ValueError(
            f"task {task!r}: parameters expected exactly {list(names)}, "
            f"got {sorted(values)} (missing {missing}, unknown {unknown})"
        )


class ParamSpace(Protocol):
    """What a distribution needs from its parameter space."""

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in order."""
        ...

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        """``values`` as TaskParams; ValueError naming the field and its range when outside."""
        ...

    def sample_train(self, task: str, n: int, rng: np.random.Generator, seed: int = 0) -> list[TaskParams]:
        """``n`` tasks from the training split (``seed``: the test set's, to stay clear of it)."""
        ...

    def test_set(self, task: str, n: int, seed: int) -> list[TaskParams]:
        """The first ``n`` tasks of the fixed held-out test set."""
        ...

    def describe(self) -> str:
        """One line for the README and ``ssm-metarl list``."""
        ...


class _Continuous:
    """Shared split logic of the continuous spaces: a fixed test pool and rejection around it."""

    names: tuple[str, ...]

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _scale(self) -> np.ndarray:
        raise NotImplementedError

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        raise NotImplementedError

    def _as_params(self, task: str, points: np.ndarray) -> list[TaskParams]:
        return [self.validate(task, dict(zip(self.names, p.tolist(), strict=True))) for p in points]

    def test_set(self, task: str, n: int, seed: int) -> list[TaskParams]:
        """The first ``n`` of ``MAX_TEST_TASKS`` points drawn from a stream seeded by ``seed``."""
        return self._as_params(task, self._draw(MAX_TEST_TASKS, np.random.default_rng(seed))[:n])

    def sample_train(self, task: str, n: int, rng: np.random.Generator, seed: int = 0) -> list[TaskParams]:
        """``n`` uniform draws, redrawing any within ``TEST_GAP`` of the test pool of ``seed``."""
        scale = self._scale()
        pool = self._draw(MAX_TEST_TASKS, np.random.default_rng(seed)) / scale
        kept: list[np.ndarray] = []
        while len(kept) < n:
            p = self._draw(1, rng)[0]
            if np.min(np.max(np.abs(pool - p / scale), axis=1)) >= TEST_GAP:
                kept.append(p)
        return self._as_params(task, np.asarray(kept).reshape(n, len(self.names)))


@dataclasses.dataclass(frozen=True)
class BoxSpace(_Continuous):
    """Independent uniform ranges, one per parameter.

    Attributes:
        names: parameter names, in order.
        low: lower bound of each parameter (inclusive).
        high: upper bound of each parameter (inclusive).
    """

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        """``values`` as TaskParams; ValueError naming the field and its range when outside."""
        _check_names(task, self.names, values)
        out = []
        for name, lo, hi in zip(self.names, self.low, self.high, strict=True):
            v = _number(task, name, values[name])
            if not lo <= v <= hi:
                raise ValueError(f"task {task!r}: parameter {name} expected in [{lo}, {hi}], got {v!r}")
            out.append((name, v))
        return TaskParams(task, tuple(out))

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, len(self.names)))

    def _scale(self) -> np.ndarray:
        return np.asarray(self.high) - np.asarray(self.low)

    def describe(self) -> str:
        """e.g. ``mass ~ U[0.5, 2.0], length ~ U[0.5, 2.0]``."""
        return ", ".join(f"{n} ~ U[{lo}, {hi}]" for n, lo, hi in zip(self.names, self.low, self.high, strict=True))


@dataclasses.dataclass(frozen=True)
class DiscSpace(_Continuous):
    """A 2-D point uniform in the disc of radius ``radius`` around the origin.

    Attributes:
        names: the two coordinate names, e.g. ``("goal_x", "goal_y")``.
        radius: the disc's radius.
    """

    names: tuple[str, ...]
    radius: float

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        """``values`` as TaskParams; ValueError when the point lies outside the disc."""
        _check_names(task, self.names, values)
        x, y = (_number(task, n, values[n]) for n in self.names)
        if x * x + y * y > self.radius**2 * (1 + 1e-12):
            raise ValueError(
                f"task {task!r}: parameters ({self.names[0]}, {self.names[1]}) expected inside the "
                f"disc of radius {self.radius}, got ({x!r}, {y!r}) at radius {np.hypot(x, y):.4g}"
            )
        return TaskParams(task, ((self.names[0], x), (self.names[1], y)))

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # Uniform in area: radius ~ R * sqrt(U), angle ~ U[0, 2 pi).
        u = rng.uniform(size=(n, 2))
        r, a = self.radius * np.sqrt(u[:, 0]), 2 * np.pi * u[:, 1]
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)

    def _scale(self) -> np.ndarray:
        return np.full(2, 2 * self.radius)

    def describe(self) -> str:
        """e.g. ``(goal_x, goal_y) uniform in the disc of radius 3.0``."""
        return f"({self.names[0]}, {self.names[1]}) uniform in the disc of radius {self.radius}"


@dataclasses.dataclass(frozen=True)
class ChoiceSpace:
    """One parameter with a finite set of integer values.

    Attributes:
        name: the parameter's name.
        train: values the training split draws from.
        test: held-out values of the test split; empty means the test split reuses ``train``
            (nothing is held out but the seeds), as for the two directions.
        labels: optional human-readable label per value, for the README.
    """

    name: str
    train: tuple[int, ...]
    test: tuple[int, ...] = ()
    labels: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        if set(self.train) & set(self.test):
            raise ValueError(f"ChoiceSpace {self.name}: train {self.train} and test {self.test} overlap")

    @property
    def names(self) -> tuple[str, ...]:
        """The single parameter name, as a tuple."""
        return (self.name,)

    @property
    def choices(self) -> tuple[int, ...]:
        """Every valid value: training then held-out."""
        return self.train + self.test

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        """``values`` as TaskParams; ValueError listing the valid choices otherwise."""
        _check_names(task, self.names, values)
        v = values[self.name]
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or v not in self.choices:
            valid = list(self.choices)
            raise ValueError(f"task {task!r}: parameter {self.name} expected one of {valid}, got {v!r}")
        return TaskParams(task, ((self.name, int(v)),))

    def sample_train(self, task: str, n: int, rng: np.random.Generator, seed: int = 0) -> list[TaskParams]:
        """``n`` draws with replacement from the training choices."""
        picks = rng.choice(np.asarray(self.train), size=n)
        return [TaskParams(task, ((self.name, int(v)),)) for v in picks]

    def test_set(self, task: str, n: int, seed: int) -> list[TaskParams]:
        """The held-out choices (or the shared ones) cycled in order to length ``n``."""
        pool = self.test or self.train
        return [TaskParams(task, ((self.name, int(pool[i % len(pool)])),)) for i in range(n)]

    def describe(self) -> str:
        """e.g. ``crippled_joint in {0, 2, 3, 5} (train), {1, 4} (test)``."""
        label = dict(self.labels)

        def fmt(vals: tuple[int, ...]) -> str:
            return "{" + ", ".join(f"{v} ({label[v]})" if v in label else str(v) for v in vals) + "}"

        if not self.test:
            return f"{self.name} in {fmt(self.train)}, shared by train and test"
        return f"{self.name} in {fmt(self.train)} (train), {fmt(self.test)} (held-out test)"
