"""Protocols: what one cell measures. ``PROTOCOLS`` maps a suite-file table name to a Protocol."""

from suites.protocols.base import Cell, Measurement, Protocol
from suites.protocols.dynamics import protocol as dynamics_protocol
from suites.protocols.mpc import protocol as mpc_protocol
from suites.protocols.policy import protocol as policy_protocol
from suites.protocols.timing import protocol as timing_protocol
from suites.tasks import TASKS, tasks_of_family

PROTOCOLS: dict[str, Protocol] = {
    "dynamics": Protocol(
        name="dynamics",
        settings_class=dynamics_protocol.DynamicsSettings,
        arms=("maml", "pretrain", "maml+adapter"),
        run=dynamics_protocol.run,
        task_names=lambda: TASKS,
        trained_by={"maml+adapter": "maml"},
    ),
    "timing": Protocol(
        name="timing",
        settings_class=timing_protocol.TimingSettings,
        arms=("timing",),
        run=timing_protocol.run,
        task_names=lambda: (),
        needs_tasks=False,
    ),
    "mpc": Protocol(
        name="mpc",
        settings_class=mpc_protocol.MPCSettings,
        arms=mpc_protocol.ARMS,
        run=mpc_protocol.run,
        task_names=lambda: tasks_of_family("dynamics"),
        trained_by={"unadapted": "maml", "maml+adapter": "maml", "random": "maml"},
    ),
    "policy": Protocol(
        name="policy",
        settings_class=policy_protocol.PolicySettings,
        arms=("maml", "pretrain"),
        run=policy_protocol.run,
        task_names=lambda: tasks_of_family("reward"),
    ),
}

__all__ = ["PROTOCOLS", "Cell", "Measurement", "Protocol"]
