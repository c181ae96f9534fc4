"""Task parameters and the parameter spaces they are drawn from, with train / validation / test splits.

Three kinds of space cover every distribution here:

- ``BoxSpace``: independent uniform ranges (pendulum mass and length, cheetah scales, velocity);
- ``DiscSpace``: a point uniform in a disc (the ant goal, as in ProMP's ``ant_rand_goal``);
- ``ChoiceSpace``: a finite set of values, split into training, validation and test choices
  (crippled joint or leg), or shared by all three splits when there is nothing to hold out
  (direction +1 / -1: only the seeds differ between the splits).

Splits of the continuous spaces (``BoxSpace``, ``DiscSpace``): the space's bounding box is cut
into a grid of ``cells`` equal cells per coordinate, and cell (k_1, ..., k_d) belongs to the split
``PATTERN[(k_1 + ... + k_d) % 4]``, i.e. train, validation, train, test along each row, so the
cells of every split are interleaved over the whole range (held-out tasks are interpolation, not
extrapolation). Every cell is shrunk by ``gap / 2`` (in units of each coordinate's range) on each
side it shares with another cell; the outer edges of the range stay in their cells. Two tasks of
different splits therefore lie in different cells and differ by at least ``gap`` of the range in
some coordinate: their L-inf distance, in units of each range, is at least ``gap``. Points in the
bands between cells are valid tasks (``validate`` accepts them; ``gym.make``'s defaults may lie
there) that no split ever draws. Each split draws uniformly from its own shrunk cells; the
validation and test sets are fixed (the first n of ``MAX_TEST_TASKS`` points of a stream seeded by
the distribution's ``test_seed``), and training draws come from the caller's generator.

A ``BoxSpace`` may also define an out-of-distribution (OOD) test region: the points of the outer
box ``[ood_low, ood_high]`` that lie at least ``gap`` of the range outside the task range in some
coordinate. ``validate`` accepts them (so their envs can be built), no other split draws them.
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


class _Continuous:
    """The grid split shared by the continuous spaces (see the module docstring)."""

    names: tuple[str, ...]
    cells: int
    gap: float

    # ---- what each space defines ----

    def _origin(self) -> np.ndarray:
        """Lower corner of the grid's bounding box, (d,)."""
        raise NotImplementedError

    def _scale(self) -> np.ndarray:
        """Width of the bounding box per coordinate, (d,): the unit of ``gap``."""
        raise NotImplementedError

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniform in the task range, (n, d)."""
        raise NotImplementedError

    def _in_range(self, points: np.ndarray) -> np.ndarray:
        """Whether each point lies in the task range, (n,) bool."""
        raise NotImplementedError

    def _draw_ood(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniform in the box around the OOD region, (n, d)."""
        raise ValueError(f"{type(self).__name__} {self.names}: no out-of-distribution region")

    def _ood(self, points: np.ndarray) -> np.ndarray:
        """Whether each point lies in the OOD region, (n,) bool."""
        return np.zeros(len(points), dtype=bool)

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        raise NotImplementedError

    @property
    def has_ood(self) -> bool:
        """Whether the space has an out-of-distribution test region (only a BoxSpace may)."""
        return False

    @property
    def shared(self) -> bool:
        """Always False: the splits of a continuous space are disjoint regions."""
        return False

    # ---- the split ----

    def _check_grid(self) -> None:
        if isinstance(self.cells, bool) or not isinstance(self.cells, int) or self.cells < 4:
            raise ValueError(f"space {self.names}: cells expected an int >= 4 (one test cell per row), "
                             f"got {self.cells!r}")  # fmt: skip
        if not 0.0 < self.gap < 1.0 / self.cells:
            raise ValueError(f"space {self.names}: gap expected in (0, 1 / cells = {1.0 / self.cells:.4g}), "
                             f"got {self.gap!r}")  # fmt: skip

    def _codes(self, points: np.ndarray) -> np.ndarray:
        """The split code of each point, (n,): 0 train, 1 validation, 2 test, 3 ood, -1 none."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, len(self.names))
        u = (points - self._origin()) / self._scale()  # [0, 1] over the bounding box
        n, half = self.cells, self.gap / 2
        k = np.clip(np.floor(u * n), 0, n - 1)
        inside = ((k == 0) | (u >= k / n + half)) & ((k == n - 1) | (u <= (k + 1) / n - half))
        codes = _PATTERN_CODES[k.sum(1).astype(np.int64) % len(PATTERN)]
        codes = np.where(inside.all(1) & self._in_range(points), codes, _IN_GAP)
        return np.where(self._ood(points), _CODES["ood"], codes)

    def split_of(self, values: Mapping[str, float]) -> Split | None:
        """The split whose region holds ``values`` (train, validation, test or ood); None otherwise."""
        point = np.array([[float(values[name]) for name in self.names]])
        code = int(self._codes(point)[0])
        return None if code == _IN_GAP else _NAMES[code]

    def _draw_split(self, split: Split, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniform in the region of ``split``: draws from the range (or the OOD box) kept
        when they fall in the region, in the order drawn."""
        code, draw = _CODES[split], (self._draw_ood if split == "ood" else self._draw)
        kept: list[np.ndarray] = []
        count = 0
        for _ in range(1_000):
            points = draw(max(64, 4 * n), rng)
            points = points[self._codes(points) == code]
            kept.append(points)
            count += len(points)
            if count >= n:
                return np.concatenate(kept)[:n]
        raise RuntimeError(f"space {self.names}: could not draw {n} points of the {split} region")

    def _as_params(self, task: str, points: np.ndarray) -> list[TaskParams]:
        return [self.validate(task, dict(zip(self.names, p.tolist(), strict=True))) for p in points]

    def sample_train(self, task: str, n: int, rng: np.random.Generator) -> list[TaskParams]:
        """``n`` draws uniform over the training cells, from ``rng``."""
        return self._as_params(task, self._draw_split("train", n, rng))

    def fixed_set(self, task: str, split: Split, n: int, seed: int) -> list[TaskParams]:
        """The first ``n`` of ``MAX_TEST_TASKS`` points drawn uniformly in the region of ``split`` from a
        stream fixed by ``seed`` and the split (so the same list on every call, whatever the run)."""
        if split == "train":
            raise ValueError("fixed_set: the training split has no fixed set; sample it with a generator")
        if split == "ood" and not self.has_ood:
            raise ValueError(f"space {self.names}: no out-of-distribution test region")
        return self._as_params(task, self._draw_split(split, MAX_TEST_TASKS, _stream(split, seed))[:n])

    def test_set(self, task: str, n: int, seed: int) -> list[TaskParams]:
        """The first ``n`` tasks of the fixed test set."""
        return self.fixed_set(task, "test", n, seed)

    def validation_set(self, task: str, n: int, seed: int) -> list[TaskParams]:
        """The first ``n`` tasks of the fixed validation set."""
        return self.fixed_set(task, "validation", n, seed)

    @property
    def ranges(self) -> np.ndarray:
        """Width of the range of each coordinate, (d,): ``gap`` is in these units, so tasks of
        different splits differ by at least ``gap * ranges[i]`` in some coordinate i."""
        return self._scale()

    def _split_text(self) -> str:
        grid = "x".join([str(self.cells)] * len(self.names))
        return (f"train / validation / test in {grid} interleaved cells, tasks of different splits "
                f">= {self.gap:g} of the range apart")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BoxSpace(_Continuous):
    """Independent uniform ranges, one per parameter, split on a grid (see the module docstring).

    Attributes:
        names: parameter names, in order.
        low: lower bound of each parameter (inclusive).
        high: upper bound of each parameter (inclusive).
        cells: grid cells per coordinate (>= 4).
        gap: minimum distance between tasks of different splits, in units of each range.
        ood_low, ood_high: the box around the out-of-distribution test region (it contains the
            task range); None: no such region.
    """

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    cells: int = 5
    gap: float = SPLIT_GAP
    ood_low: tuple[float, ...] | None = None
    ood_high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        d = len(self.names)
        if len(self.low) != d or len(self.high) != d or not np.all(np.asarray(self.low) < np.asarray(self.high)):
            raise ValueError(f"BoxSpace {self.names}: expected low < high, one each per name, got {self.low}, "
                             f"{self.high}")  # fmt: skip
        self._check_grid()
        if (self.ood_low is None) != (self.ood_high is None):
            raise ValueError(f"BoxSpace {self.names}: expected both or neither of ood_low and ood_high")
        if self.ood_low is not None and self.ood_high is not None:
            olo, ohi = np.asarray(self.ood_low), np.asarray(self.ood_high)
            width = self.gap * self._scale()
            if olo.shape != (d,) or ohi.shape != (d,) or np.any(olo > self._origin()) or np.any(ohi < self.high):
                raise ValueError(f"BoxSpace {self.names}: expected an OOD box around the task range, "
                                 f"got {self.ood_low}, {self.ood_high}")  # fmt: skip
            if not np.any((olo <= self._origin() - width) | (ohi >= np.asarray(self.high) + width)):
                raise ValueError(f"BoxSpace {self.names}: expected an OOD box reaching at least the gap {self.gap} "
                                 "beyond the task range somewhere")  # fmt: skip

    @property
    def has_ood(self) -> bool:
        """Whether ``ood_low`` / ``ood_high`` define an out-of-distribution test region."""
        return self.ood_low is not None

    def _origin(self) -> np.ndarray:
        return np.asarray(self.low, dtype=np.float64)

    def _scale(self) -> np.ndarray:
        return np.asarray(self.high, dtype=np.float64) - np.asarray(self.low, dtype=np.float64)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, len(self.names)))

    def _in_range(self, points: np.ndarray) -> np.ndarray:
        return np.all((points >= self._origin()) & (points <= np.asarray(self.high)), axis=1)

    def _draw_ood(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.ood_low is None or self.ood_high is None:
            return super()._draw_ood(n, rng)
        return rng.uniform(self.ood_low, self.ood_high, size=(n, len(self.names)))

    def _ood(self, points: np.ndarray) -> np.ndarray:
        if self.ood_low is None or self.ood_high is None:
            return super()._ood(points)
        width = self.gap * self._scale()
        in_box = np.all((points >= np.asarray(self.ood_low)) & (points <= np.asarray(self.ood_high)), axis=1)
        beyond = np.any((points <= self._origin() - width) | (points >= np.asarray(self.high) + width), axis=1)
        return in_box & beyond

    def validate(self, task: str, values: Mapping[str, object]) -> TaskParams:
        """``values`` as TaskParams; ValueError naming the field and its range when outside.

        With an OOD region, values in it are valid too (its envs must be buildable); a point
        outside the task range but within the gap around it is not.
        """
        _check_names(task, self.names, values)
        out = []
        outer_low = self.low if self.ood_low is None else self.ood_low
        outer_high = self.high if self.ood_high is None else self.ood_high
        for i, name in enumerate(self.names):
            v = _number(task, name, values[name])
            if not outer_low[i] <= v <= outer_high[i]:
                note = ""
                if self.ood_low is not None:
                    note = f"; out-of-distribution test tasks may also take values in [{outer_low[i]}, {outer_high[i]}]"
                raise ValueError(f"task {task!r}: parameter {name} expected in [{self.low[i]}, {self.high[i]}], "
                                 f"got {v!r}{note}")  # fmt: skip
            out.append((name, v))
        point = np.array([[v for _, v in out]])
        if not (self._in_range(point)[0] or self._ood(point)[0]):
            width = ", ".join(f"{name} {w:.4g}" for name, w in zip(self.names, self.gap * self._scale(), strict=True))
            raise ValueError(f"task {task!r}: parameters {dict(out)} expected inside the task range "
                             f"({self.describe_range()}) or, for an out-of-distribution test task, at least the "
                             f"gap ({width}) outside it in some parameter")  # fmt: skip
        return TaskParams(task, tuple(out))

    def describe_range(self) -> str:
        """e.g. ``mass ~ U[0.5, 2.0], length ~ U[0.5, 2.0]``."""
        return ", ".join(f"{n} ~ U[{lo}, {hi}]" for n, lo, hi in zip(self.names, self.low, self.high, strict=True))

    def describe(self) -> str:
        """The ranges, the split and any OOD region, on one line."""
        text = f"{self.describe_range()}; {self._split_text()}"
        if self.ood_low is not None and self.ood_high is not None:
            box = " x ".join(f"[{lo}, {hi}]" for lo, hi in zip(self.ood_low, self.ood_high, strict=True))
            text += f"; out-of-distribution test in {box}, >= {self.gap:g} of the range outside the task range"
        return text


@dataclasses.dataclass(frozen=True)
class DiscSpace(_Continuous):
    """A 2-D point uniform in the disc of radius ``radius`` around the origin, split on a grid over
    its bounding square (see the module docstring).

    Attributes:
        names: the two coordinate names, e.g. ``("goal_x", "goal_y")``.
        radius: the disc's radius.
        cells: grid cells per coordinate over the square [-radius, radius]^2 (>= 4).
        gap: minimum distance between tasks of different splits, in units of 2 * radius.
    """

    names: tuple[str, ...]
    radius: float
    cells: int = 5
    gap: float = SPLIT_GAP

    def __post_init__(self) -> None:
        if len(self.names) != 2 or not self.radius > 0:
            raise ValueError(f"DiscSpace: expected two names and a radius > 0, got {self.names}, {self.radius}")
        self._check_grid()

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

    def _origin(self) -> np.ndarray:
        return np.full(2, -float(self.radius))

    def _scale(self) -> np.ndarray:
        return np.full(2, 2 * float(self.radius))

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # Uniform in area: radius ~ R * sqrt(U), angle ~ U[0, 2 pi).
        u = rng.uniform(size=(n, 2))
        r, a = self.radius * np.sqrt(u[:, 0]), 2 * np.pi * u[:, 1]
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)

    def _in_range(self, points: np.ndarray) -> np.ndarray:
        return np.asarray((points**2).sum(1) <= self.radius**2 * (1 + 1e-12))

    def describe(self) -> str:
        """e.g. ``(goal_x, goal_y) uniform in the disc of radius 3.0; train / validation / test ...``."""
        return f"({self.names[0]}, {self.names[1]}) uniform in the disc of radius {self.radius}; {self._split_text()}"


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
