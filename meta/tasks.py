"""Task containers: one task's support and query sets, and a stack of tasks.

Inputs are sequences (B, T, D) or single steps (B, D); targets share the leading (B, T) or (B,)
of their inputs. A ``TaskBatch`` holds the same four tensors with a leading task dimension, the
form the vmapped MAML path consumes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

_FIELDS = ("support_x", "support_y", "query_x", "query_y")


def _check_task_tensors(owner: str, tensors: dict[str, Tensor], lead: int) -> None:
    """Shape checks shared by Task (lead=0) and TaskBatch (lead=1: the task dimension)."""
    for field in _FIELDS:
        value = tensors[field]
        if not isinstance(value, Tensor):
            raise ValueError(f"{owner}.{field}: expected a torch.Tensor, got {type(value).__name__}")
    sx, qx = tensors["support_x"], tensors["query_x"]
    if sx.dim() - lead not in (2, 3):
        raise ValueError(
            f"{owner}.support_x: expected {lead} leading dim(s) then (B, T, D) or (B, D), got shape {tuple(sx.shape)}"
        )
    if qx.dim() != sx.dim():
        raise ValueError(
            f"{owner}.query_x: expected {sx.dim()} dims like support_x {tuple(sx.shape)}, got shape {tuple(qx.shape)}"
        )
    if qx.shape[-1] != sx.shape[-1]:
        raise ValueError(f"{owner}.query_x: expected {sx.shape[-1]} features like support_x, got {qx.shape[-1]}")
    for x_name, y_name in (("support_x", "support_y"), ("query_x", "query_y")):
        x, y = tensors[x_name], tensors[y_name]
        if y.dim() != x.dim() or y.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                f"{owner}.{y_name}: expected shape {(*x.shape[:-1], '*')} (the leading dims of "
                f"{x_name}), got {tuple(y.shape)}"
            )
    if tensors["query_y"].shape[-1] != tensors["support_y"].shape[-1]:
        raise ValueError(
            f"{owner}.query_y: expected {tensors['support_y'].shape[-1]} features like support_y, "
            f"got {tensors['query_y'].shape[-1]}"
        )


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: a support set to adapt on and a query set to score the adapted model on.

    Shapes: x (B, T, D) or (B, D); y the same leading dims with its own feature size. Support
    and query may differ in B and T but not in the number of dims or features.
    """

    support_x: Tensor
    """Adaptation inputs, (B, T, D) or (B, D)."""
    support_y: Tensor
    """Adaptation targets, (B, T, out) or (B, out)."""
    query_x: Tensor
    """Evaluation inputs, (B', T', D) or (B', D)."""
    query_y: Tensor
    """Evaluation targets, (B', T', out) or (B', out)."""

    def __post_init__(self) -> None:
        _check_task_tensors("Task", {f: getattr(self, f) for f in _FIELDS}, lead=0)


@dataclasses.dataclass(frozen=True)
class TaskBatch:
    """``n_tasks`` tasks of equal shapes stacked on a leading task dimension.

    Shapes: x (n_tasks, B, T, D) or (n_tasks, B, D); y likewise.
    """

    support_x: Tensor
    """Adaptation inputs, (n_tasks, B, T, D) or (n_tasks, B, D)."""
    support_y: Tensor
    """Adaptation targets, (n_tasks, B, T, out) or (n_tasks, B, out)."""
    query_x: Tensor
    """Evaluation inputs, (n_tasks, B', T', D) or (n_tasks, B', D)."""
    query_y: Tensor
    """Evaluation targets, (n_tasks, B', T', out) or (n_tasks, B', out)."""

    def __post_init__(self) -> None:
        tensors = {f: getattr(self, f) for f in _FIELDS}
        _check_task_tensors("TaskBatch", tensors, lead=1)
        n = self.support_x.shape[0]
        if n < 1:
            raise ValueError("TaskBatch.support_x: expected at least one task, got 0")
        for field in _FIELDS[1:]:
            if tensors[field].shape[0] != n:
                raise ValueError(
                    f"TaskBatch.{field}: expected {n} tasks (support_x's leading dim), got {tensors[field].shape[0]}"
                )

    def __len__(self) -> int:
        return int(self.support_x.shape[0])

    def __getitem__(self, i: int) -> Task:
        return Task(self.support_x[i], self.support_y[i], self.query_x[i], self.query_y[i])

    def unstack(self) -> list[Task]:
        """The tasks one by one (views, no copies)."""
        return [self[i] for i in range(len(self))]

    @classmethod
    def stack(cls, tasks: Sequence[Task]) -> TaskBatch:
        """Stack tasks of equal shapes; a mismatch names the task and field."""
        if len(tasks) == 0:
            raise ValueError("tasks: expected at least one Task, got an empty sequence")
        first = tasks[0]
        for i, task in enumerate(tasks):
            if not isinstance(task, Task):
                raise ValueError(f"tasks[{i}]: expected a Task, got {type(task).__name__}")
            for field in _FIELDS:
                got, want = getattr(task, field).shape, getattr(first, field).shape
                if got != want:
                    raise ValueError(
                        f"tasks[{i}].{field}: expected shape {tuple(want)} (as tasks[0]) to stack "
                        f"tasks, got {tuple(got)}"
                    )
        return cls(*(torch.stack([getattr(t, f) for t in tasks]) for f in _FIELDS))


def check_input(field: str, x: Tensor, input_dim: int) -> None:
    """ValueError unless ``x`` is (B, T, input_dim) or (B, input_dim)."""
    if not isinstance(x, Tensor) or x.dim() not in (2, 3) or x.shape[-1] != input_dim:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        d = input_dim
        raise ValueError(f"{field}: expected shape (B, T, {d}) or (B, {d}) (the model's input_dim {d}), got {got}")


def check_task(where: str, task: Task, input_dim: int, same_batch: bool) -> None:
    """A task's inputs fit the model; with ``same_batch`` the query has the support's batch size
    (the query then starts from the support's final state, one row per sequence)."""
    check_input(f"{where}.support_x", task.support_x, input_dim)
    check_input(f"{where}.query_x", task.query_x, input_dim)
    if same_batch and task.query_x.shape[0] != task.support_x.shape[0]:
        raise ValueError(
            f"{where}.query_x: expected batch size {task.support_x.shape[0]} (the support's, "
            f"as query_from_support_state=True), got {task.query_x.shape[0]}"
        )


def as_task_list(tasks: Sequence[Task] | TaskBatch, input_dim: int, same_batch: bool) -> list[Task]:
    """A non-empty list of checked tasks from a list of Task or a TaskBatch."""
    if isinstance(tasks, TaskBatch):
        tasks = tasks.unstack()
    if isinstance(tasks, Task) or not isinstance(tasks, Sequence):
        raise ValueError(f"tasks: expected a list of Task or a TaskBatch, got {type(tasks).__name__}")
    if len(tasks) == 0:
        raise ValueError("tasks: expected at least one Task, got an empty list")
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise ValueError(f"tasks[{i}]: expected a Task, got {type(task).__name__}")
        check_task(f"tasks[{i}]", task, input_dim, same_batch)
    return list(tasks)


def as_task_batch(tasks: Sequence[Task] | TaskBatch, input_dim: int, same_batch: bool) -> TaskBatch:
    """A checked TaskBatch from a list of Task (stacked) or a TaskBatch (its first task checked)."""
    if isinstance(tasks, TaskBatch):
        check_task("tasks", tasks[0], input_dim, same_batch)
        return tasks
    return TaskBatch.stack(as_task_list(tasks, input_dim, same_batch))


def select_tasks(tasks: list[Task] | TaskBatch, keep: list[int]) -> list[Task] | TaskBatch:
    """The tasks at indices ``keep``, in the same form (a list, or a TaskBatch)."""
    if isinstance(tasks, TaskBatch):
        index = torch.tensor(keep, dtype=torch.long, device=tasks.support_x.device)
        return TaskBatch(*(getattr(tasks, f).index_select(0, index) for f in _FIELDS))
    return [tasks[i] for i in keep]
