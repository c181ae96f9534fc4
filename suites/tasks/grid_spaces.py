"""The continuous parameter spaces, ``BoxSpace`` and ``DiscSpace``, and their grid split.

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
from collections.abc import Mapping

import numpy as np

from suites.tasks.spaces import (
    _CODES,
    _IN_GAP,
    _NAMES,
    _PATTERN_CODES,
    MAX_TEST_TASKS,
    PATTERN,
    SPLIT_GAP,
    Split,
    TaskParams,
    _check_names,
    _number,
    _stream,
)


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
