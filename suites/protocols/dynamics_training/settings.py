"""``TrainingSettings``: the settings that determine a trained dynamics model, declared once.

The dynamics and mpc protocols' settings subclass it: suite files write the training fields flat
in their ``[dynamics]`` / ``[mpc]`` tables, next to the protocol's own fields. A subclass states a
default only for the four fields with no common default (``train_tasks``, ``sequence_length``,
``meta_iterations``, ``inner_lr``). ``training()`` keeps the training fields alone: the trained
model depends on them, so two protocols whose training fields are equal share one model.

The checks every protocol's settings class runs in ``__post_init__`` live here too
(``check_types``, ``require_positive``, ``require_at_most``), so settings built in Python get the
same one-line ``ValueError``s, naming the field, as settings read from a suite file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

MAX_LR = 10.0
"""Upper bound of every learning rate: SGD or Adam steps this large diverge on normalised data."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """What determines a trained dynamics model besides task, model, budget, seed and arm.

    Every field but ``first_order`` must be positive, finite and at most its bound in
    ``TRAINING_MAX``. ``train_tasks``, ``sequence_length``, ``meta_iterations`` and ``inner_lr``
    have no common default: each protocol sets its own. The fields that span others are checked
    against the data they produce (``suites.protocols.dynamics_training.windows``): each of
    ``episodes_per_task`` episodes of ``horizon`` steps is cut into ``horizon // sequence_length``
    windows; the first ``support_episodes`` episodes give the support windows, the rest the query
    windows, and a task must hold ``support_windows`` / ``query_windows`` of them.

    Attributes:
        train_tasks: training tasks sampled per cell.
        episodes_per_task: random-policy episodes collected per training task.
        support_episodes: of those, episodes that give support windows (the rest give queries).
        horizon: steps per collected episode.
        sequence_length: steps per support / query window.
        support_windows: windows per task in a support set (K-shot).
        query_windows: windows per task in a query set.
        meta_iterations: outer steps (and Adam steps of joint training, ``pretrain``).
        meta_batch: tasks per outer step (at most ``train_tasks``).
        inner_steps: inner SGD steps during meta-training.
        inner_lr: inner SGD learning rate during meta-training.
        outer_lr: Adam learning rate of the outer step (and of joint training).
        first_order: first-order MAML (no second derivatives).
    """

    train_tasks: int
    episodes_per_task: int = 4
    support_episodes: int = 2
    horizon: int = 100
    sequence_length: int
    support_windows: int = 4
    query_windows: int = 4
    meta_iterations: int
    meta_batch: int = 8
    inner_steps: int = 1
    inner_lr: float
    outer_lr: float = 3e-3
    first_order: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        require_positive(self, (name for name in TRAINING_FIELDS if name != "first_order"))
        require_at_most(self, TRAINING_MAX)
        if self.support_episodes >= self.episodes_per_task:
            raise ValueError(f"support_episodes: expected between 1 and {self.episodes_per_task - 1} "
                             f"(episodes_per_task - 1), got {self.support_episodes}")  # fmt: skip
        if self.sequence_length > self.horizon:
            raise ValueError(
                f"sequence_length: expected at most the horizon {self.horizon}, got {self.sequence_length}"
            )
        check_windows(self, "support_windows", self.support_windows, self.support_episodes, "support_episodes")
        check_windows(self, "query_windows", self.query_windows, self.episodes_per_task - self.support_episodes,
                      "episodes_per_task - support_episodes")  # fmt: skip
        if self.meta_batch > self.train_tasks:
            raise ValueError(f"meta_batch: expected at most train_tasks {self.train_tasks}, got {self.meta_batch}")

    def training(self) -> TrainingSettings:
        """The training fields alone, as a ``TrainingSettings`` (what ``TrainingKey`` hashes)."""
        if type(self) is TrainingSettings:
            return self
        return TrainingSettings(**{name: getattr(self, name) for name in TRAINING_FIELDS})

    def protocol_fields(self) -> list[str]:
        """The names of the fields a subclass adds to the training fields, in order."""
        return [f.name for f in dataclasses.fields(self) if f.name not in TRAINING_FIELDS]

    def windows_per_episode(self) -> int:
        """Windows of ``sequence_length`` steps cut from one episode of ``horizon`` steps (the tail dropped)."""
        return self.horizon // self.sequence_length


TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingSettings))
"""The names of the training fields, in order."""

TRAINING_MAX: dict[str, float] = {
    "train_tasks": 100_000,
    "episodes_per_task": 100_000,
    "horizon": 1_000_000,
    "meta_iterations": 10_000_000,
    "inner_steps": 1_000,
    "inner_lr": MAX_LR,
    "outer_lr": MAX_LR,
}
"""Upper bounds of the training fields that no other field bounds (sizes: beyond any real run)."""


def check_windows(settings: TrainingSettings, name: str, count: int, episodes: int, episodes_name: str) -> None:
    """Raise ValueError if ``count`` windows do not fit in ``episodes`` episodes' windows."""
    per_episode = settings.windows_per_episode()
    if count > episodes * per_episode:
        raise ValueError(
            f"{name}: expected at most {episodes * per_episode} ({episodes_name} {episodes} x {per_episode} "
            f"windows of sequence_length {settings.sequence_length} in horizon {settings.horizon}), got {count}"
        )


# ---- checks every settings class uses


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """A settings class's resolved annotations (cached: ``__post_init__`` runs on every replace)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return "a tuple of " + {int: "ints", float: "finite numbers", str: "strings", bool: "true/false values"}.get(
            item, _type_name(item)
        )
    return {int: "an int", float: "a finite number", str: "a string", bool: "true/false"}.get(
        tp, "None" if tp is type(None) else str(tp)
    )


def _is_instance(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in typing.get_args(tp))
    if origin is tuple:
        return isinstance(value, tuple) and all(_is_instance(v, typing.get_args(tp)[0]) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return True  # a type these checks do not know: the class checks it itself


def check_types(settings: object) -> None:
    """Raise ValueError naming the first field whose value is not of its annotated type.

    Ints are ints (not bools), numbers are finite ints or floats (no inf, no NaN), tuples hold
    their item type; settings built in Python are checked like those read from a suite file.
    """
    hints = _hints(type(settings))
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if not _is_instance(value, hints[f.name]):
            raise ValueError(f"{f.name}: expected {_type_name(hints[f.name])}, got {value!r}")


def require_positive(settings: object, names: Iterable[str]) -> None:
    """Raise ValueError naming the first of ``names`` whose value in ``settings`` is not > 0."""
    for name in names:
        value = getattr(settings, name)
        if not value > 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")


def require_at_most(settings: object, bounds: Mapping[str, float]) -> None:
    """Raise ValueError naming the first field in ``bounds`` whose value is above its bound (None passes)."""
    for name, high in bounds.items():
        value = getattr(settings, name)
        if value is not None and value > high:
            raise ValueError(f"{name}: expected at most {_number(high)}, got {value!r}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def require_distinct(name: str, values: Iterable[Any]) -> None:
    """Raise ValueError naming the first value that appears twice in ``values``."""
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{name}: expected distinct values, got {value!r} twice")
        seen.add(value)
