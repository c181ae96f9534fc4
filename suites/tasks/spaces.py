"""Task parameters and the parameter spaces they are drawn from, with train / validation / test splits.

Three kinds of space cover every distribution here:

- ``BoxSpace``: independent uniform ranges (pendulum mass and length, cheetah scales, velocity);
- ``DiscSpace``: a point uniform in a disc (the ant goal, as in ProMP's ``ant_rand_goal``);
- ``ChoiceSpace``: a finite set of values, split into training, validation and test choices
  (crippled joint or leg), or shared by all three splits when there is nothing to hold out
  (direction +1 / -1: only the seeds differ between the splits).

The splits of the continuous spaces (a grid of cells with a gap between splits, and the
out-of-distribution region of a ``BoxSpace``) are described in ``suites.tasks.grid_spaces``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal, Protocol

import numpy as np

MAX_TEST_TASKS = 100
"""Size of each fixed pool (validation, test, OOD test); ``test_tasks(n)`` returns its first n."""

Split = Literal["train", "validation", "test", "ood"]
"""A split's name; ``"ood"``: the out-of-distribution test set, where a space has one."""

SPLITS: tuple[Split, ...] = ("train", "validation", "test")
"""The three splits every distribution has."""

PATTERN: tuple[Split, ...] = ("train", "validation", "train", "test")
"""Split of grid cell (k_1, ..., k_d) of a continuous space: ``PATTERN[sum(k) % 4]``."""

SPLIT_GAP = 0.05
"""Default minimum distance between tasks of different splits, in units of each coordinate's range."""

_CODES: dict[Split, int] = {"train": 0, "validation": 1, "test": 2, "ood": 3}
_PATTERN_CODES = np.array([_CODES[s] for s in PATTERN])
_NAMES: dict[int, Split] = {code: name for name, code in _CODES.items()}
_IN_GAP = -1
_STREAMS: dict[Split, int] = {"validation": 1, "ood": 2}
"""Fixed sets other than the test set draw from ``default_rng([seed, stream])``; test from ``seed``."""


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


def _stream(split: Split, seed: int) -> np.random.Generator:
    return np.random.default_rng(seed if split == "test" else [seed, _STREAMS[split]])


class ParamSpace(Protocol):
    """What a distribution needs from its parameter space."""

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in order."""
        ...

    @property
    def has_ood(self) -> bool:
        """Whether the space has an out-of-distribution test region."""
        ...

    @property
    def shared(self) -> bool:
        """Whether every split shares the same values (nothing held out but seeds)."""
        ...

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        """``values`` as TaskParams; ValueError naming the field and its range when outside."""
        ...

    def sample_train(self, task: str, n: int, rng: np.random.Generator) -> list[TaskParams]:
        """``n`` tasks from the training split, drawn with ``rng``."""
        ...

    def fixed_set(self, task: str, split: Split, n: int, seed: int) -> list[TaskParams]:
        """The first ``n`` tasks of the fixed set of ``split`` (validation, test or ood)."""
        ...

    def split_of(self, values: Mapping[str, float]) -> Split | None:
        """The split whose region holds ``values``; None between regions (a valid task no split draws)
        and in a space whose splits share their values."""
        ...

    def describe(self) -> str:
        """One line for the README and ``ssm-metarl list``."""
        ...


@dataclasses.dataclass(frozen=True)
class ChoiceSpace:
    """One parameter with a finite set of integer values.

    Attributes:
        name: the parameter's name.
        train: values the training split draws from.
        test: held-out values of the test split; empty means every split reuses ``train``
            (nothing is held out but the seeds), as for the two directions.
        labels: optional human-readable label per value, for the README.
        validation: held-out values of the validation split, disjoint from ``train`` and ``test``;
            empty with ``test`` empty (shared values). A space with test values and no
            validation values has no validation set (``fixed_set`` says so).
    """

    name: str
    train: tuple[int, ...]
    test: tuple[int, ...] = ()
    labels: tuple[tuple[int, str], ...] = ()
    validation: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        groups = {"train": self.train, "validation": self.validation, "test": self.test}
        for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
            if set(groups[a]) & set(groups[b]):
                raise ValueError(f"ChoiceSpace {self.name}: {a} {groups[a]} and {b} {groups[b]} overlap")
        if not self.train:
            raise ValueError(f"ChoiceSpace {self.name}: expected at least one training value")
        if self.validation and not self.test:
            raise ValueError(f"ChoiceSpace {self.name}: validation values {self.validation} without test values")

    @property
    def names(self) -> tuple[str, ...]:
        """The single parameter name, as a tuple."""
        return (self.name,)

    @property
    def has_ood(self) -> bool:
        """Always False: a finite set has no out-of-distribution region."""
        return False

    @property
    def shared(self) -> bool:
        """Whether the splits share the training values (nothing held out but seeds)."""
        return not self.test

    @property
    def choices(self) -> tuple[int, ...]:
        """Every valid value: training, validation, then test."""
        return self.train + self.validation + self.test

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        """``values`` as TaskParams; ValueError listing the valid choices otherwise."""
        _check_names(task, self.names, values)
        v = values[self.name]
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or v not in self.choices:
            valid = list(self.choices)
            raise ValueError(f"task {task!r}: parameter {self.name} expected one of {valid}, got {v!r}")
        return TaskParams(task, ((self.name, int(v)),))

    def split_of(self, values: Mapping[str, float]) -> Split | None:
        """The split that owns the value; None in a shared space (every split has every value)."""
        if self.shared:
            return None
        v = int(values[self.name])
        groups: tuple[tuple[Split, tuple[int, ...]], ...] = (
            ("train", self.train),
            ("validation", self.validation),
            ("test", self.test),
        )
        return next((split for split, group in groups if v in group), None)

    def sample_train(self, task: str, n: int, rng: np.random.Generator) -> list[TaskParams]:
        """``n`` draws with replacement from the training choices."""
        picks = rng.choice(np.asarray(self.train), size=n)
        return [TaskParams(task, ((self.name, int(v)),)) for v in picks]

    def fixed_set(self, task: str, split: Split, n: int, seed: int) -> list[TaskParams]:
        """The values of ``split`` (or the shared ones) cycled in order to length ``n``."""
        if split == "train" or split == "ood":
            raise ValueError(f"ChoiceSpace {self.name}: no fixed {split} set")
        pool = self.train if self.shared else (self.test if split == "test" else self.validation)
        if not pool:
            raise ValueError(f"ChoiceSpace {self.name}: no validation values (test {self.test}, train {self.train})")
        return [TaskParams(task, ((self.name, int(pool[i % len(pool)])),)) for i in range(n)]

    def test_set(self, task: str, n: int, seed: int) -> list[TaskParams]:
        """The held-out test choices (or the shared ones) cycled in order to length ``n``."""
        return self.fixed_set(task, "test", n, seed)

    def validation_set(self, task: str, n: int, seed: int) -> list[TaskParams]:
        """The validation choices (or the shared ones) cycled in order to length ``n``."""
        return self.fixed_set(task, "validation", n, seed)

    def describe(self) -> str:
        """e.g. ``crippled_joint in {0, 2, 3, 5} (train), {1} (validation), {4} (held-out test)``."""
        label = dict(self.labels)

        def fmt(vals: tuple[int, ...]) -> str:
            return "{" + ", ".join(f"{v} ({label[v]})" if v in label else str(v) for v in vals) + "}"

        if self.shared:
            return (f"{self.name} in {fmt(self.train)}, shared by train and test (and validation): "
                    "only seeds are held out")  # fmt: skip
        if not self.validation:
            return f"{self.name} in {fmt(self.train)} (train), {fmt(self.test)} (held-out test), no validation"
        return f"{self.name} in {fmt(self.train)} (train), {fmt(self.validation)} (validation), {fmt(self.test)} (test)"
