"""MAML over any zoo model: ``MetaMAML``, and the ``Task`` / ``TaskBatch`` containers it consumes.

    from meta import MetaMAML, Task, TaskBatch
    maml = MetaMAML(model, inner_lr=0.01, outer_lr=1e-3, num_inner_steps=1)
    loss = maml.meta_update([Task(sx, sy, qx, qy), ...])      # or a stacked TaskBatch

Files: config.py (``MAMLConfig``), tasks.py (containers and their shape checks), functional.py
(the pure loss and inner update), maml.py (the algorithm, vmapped and per-task paths),
vmap_timing.py (vmap vs loop timing),
allocator.py (``keep_freed_memory``: no page faults on reused memory; call it once per process).
Imports only ``models`` (the interface) and torch.
"""

from meta.allocator import keep_freed_memory
from meta.config import MAMLConfig
from meta.functional import NonFiniteError, mse, sgd_update
from meta.maml import MetaMAML
from meta.tasks import Task, TaskBatch

__all__ = ["MAMLConfig", "MetaMAML", "NonFiniteError", "Task", "TaskBatch", "keep_freed_memory", "mse", "sgd_update"]
