"""Protocols: what one cell measures. ``PROTOCOLS`` maps a suite-file table name to a Protocol."""

from suites.protocols import dynamics
from suites.protocols.base import Cell, Measurement, Protocol
from suites.tasks import TASKS

PROTOCOLS: dict[str, Protocol] = {
    "dynamics": Protocol(
        name="dynamics",
        settings_class=dynamics.DynamicsSettings,
        arms=("maml", "pretrain", "maml+adapter"),
        run=dynamics.run,
        task_names=lambda: TASKS,
        training_arm={"maml+adapter": "maml"},
    ),
}

__all__ = ["PROTOCOLS", "Cell", "Measurement", "Protocol"]
