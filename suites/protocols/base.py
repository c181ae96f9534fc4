"""What a protocol is to the runner: settings, arms, and one top-level function per cell."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple


class Measurement(NamedTuple):
    """One measurement a cell reports; the runner adds suite, protocol, task, model, seed."""

    arm: str
    metric: str
    step: int
    value: float


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: a protocol on one task, model, arm and seed.

    Attributes:
        suite: suite name.
        protocol: protocol name.
        task: task distribution name ("-" for protocols without tasks).
        model: zoo model name.
        training_arm: the arm this cell trains; it may report further arms that reuse its
            training (the ``maml`` cell of the dynamics protocol also reports ``maml+adapter``).
        seed: seeds data collection, initialisation and training.
        reported_arms: the arms this cell reports (rows carry them in their ``arm`` column).
        param_budget: parameters each model is sized to.
        settings: the protocol's settings dataclass.
        store: directory where the run's cells share trained models (the runner sets
            ``<run>/models``); None: every cell trains its own.
    """

    suite: str
    protocol: str
    task: str
    model: str
    training_arm: str
    seed: int
    reported_arms: tuple[str, ...]
    param_budget: int
    settings: Any
    store: str | None = None

    @property
    def cell_id(self) -> str:
        """A file-name-safe unique id."""
        raw = f"{self.protocol}__{self.task}__{self.model}__{self.training_arm}__s{self.seed}"
        return re.sub(r"[^A-Za-z0-9_.-]", "-", raw.replace("+", "plus"))

    def key(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "protocol": self.protocol,
            "task": self.task,
            "model": self.model,
            "training_arm": self.training_arm,
            "seed": self.seed,
        }


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A protocol as data.

    Attributes:
        name: the suite-file table name.
        settings_class: frozen dataclass of its settings (budgets, evaluation).
        arms: valid arm names.
        run: top-level function ``run(cell) -> list[Measurement]``.
        task_names: the task names it accepts (a callable so the task registry loads lazily).
        trained_by: arm -> the arm whose cell trains it (defaults to itself), so arms that
            share one trained model share one cell.
        needs_tasks: False for protocols that run once per model (timing).
    """

    name: str
    settings_class: type
    arms: tuple[str, ...]
    run: Callable[[Cell], list[Measurement]]
    task_names: Callable[[], Iterable[str]]
    trained_by: dict[str, str] = dataclasses.field(default_factory=dict)
    needs_tasks: bool = True

    def valid_tasks(self) -> list[str]:
        return sorted(self.task_names())

    def cell_arms(self, arms: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
        """Group requested arms by the arm whose cell produces them: [(cell arm, reported arms)]."""
        groups: dict[str, list[str]] = {}
        for arm in arms:
            groups.setdefault(self.trained_by.get(arm, arm), []).append(arm)
        return [(cell_arm, tuple(reported)) for cell_arm, reported in groups.items()]
