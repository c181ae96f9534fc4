"""``TrainingSettings``: the settings that determine a trained dynamics model, declared once.

The dynamics and mpc protocols' settings subclass it: suite files write the training fields flat
in their ``[dynamics]`` / ``[mpc]`` tables, next to the protocol's own fields. A subclass states a
default only for the four fields with no common default (``train_tasks``, ``sequence_length``,
``meta_iterations``, ``inner_lr``). ``training()`` keeps the training fields alone: the trained
model depends on them, so two protocols whose training fields are equal share one model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """What determines a trained dynamics model besides task, model, budget, seed and arm.

    Every field but ``first_order`` must be positive. ``train_tasks``, ``sequence_length``,
    ``meta_iterations`` and ``inner_lr`` have no common default: each protocol sets its own.

    Attributes:
        train_tasks: training tasks sampled per cell.
        episodes_per_task: random-policy episodes collected per training task.
        support_episodes: of those, episodes that give support windows (the rest give queries).
        horizon: steps per collected episode.
        sequence_length: steps per support / query window.
        support_windows: windows per task in a support set (K-shot).
        query_windows: windows per task in a query set.
        meta_iterations: outer steps (and Adam steps of joint training, ``pretrain``).
        meta_batch: tasks per outer step.
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
        require_positive(self, (name for name in TRAINING_FIELDS if name != "first_order"))

    def training(self) -> TrainingSettings:
        """The training fields alone, as a ``TrainingSettings`` (what ``TrainingKey`` hashes)."""
        if type(self) is TrainingSettings:
            return self
        return TrainingSettings(**{name: getattr(self, name) for name in TRAINING_FIELDS})

    def protocol_fields(self) -> list[str]:
        """The names of the fields a subclass adds to the training fields, in order."""
        return [f.name for f in dataclasses.fields(self) if f.name not in TRAINING_FIELDS]


TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingSettings))
"""The names of the training fields, in order."""


def require_positive(settings: object, names: Iterable[str]) -> None:
    """Raise ValueError naming the first of ``names`` whose value in ``settings`` is not > 0."""
    for name in names:
        value = getattr(settings, name)
        if not value > 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
