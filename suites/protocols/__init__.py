"""Protocols: what one cell measures. ``PROTOCOLS`` maps a suite-file table name to a Protocol."""

from suites.protocols import dynamics, mpc, policy, timing
from suites.protocols.base import Cell, Measurement, Protocol
from suites.tasks import TASKS, tasks_of_family

PROTOCOLS: dict[str, Protocol] = {
    "dynamics": Protocol(
        name="dynamics",
        settings_class=dynamics.DynamicsSettings,
        arms=("maml", "pretrain", "maml+adapter"),
        run=dynamics.run,
        task_names=lambda: TASKS,
        training_arm={"maml+adapter": "maml"},
    ),
    "timing": Protocol(
        name="timing",
        settings_class=timing.TimingSettings,
        arms=("timing",),
        run=timing.run,
        task_names=lambda: (),
        needs_tasks=False,
    ),
    "mpc": Protocol(
        name="mpc",
        settings_class=mpc.MPCSettings,
        arms=mpc.ARMS,
        run=mpc.run,
        task_names=lambda: tasks_of_family("dynamics"),
        training_arm={"unadapted": "maml", "maml+adapter": "maml", "random": "maml"},
    ),
    "policy": Protocol(
        name="policy",
        settings_class=policy.PolicySettings,
        arms=("maml", "pretrain"),
        run=policy.run,
        task_names=lambda: tasks_of_family("reward"),
    ),
}

__all__ = ["PROTOCOLS", "Cell", "Measurement", "Protocol"]
