"""Dynamics-model training shared by the protocols that need it, done once per run.

The dynamics protocol's ``maml`` and ``pretrain`` cells and the mpc protocol's ``maml`` cell all
train a next-observation-change model from the same inputs: the task, the model, its parameter
budget, the seed, the arm and the ``TrainingSettings``. ``train_dynamics`` trains it from those
alone (its own numpy generator from the seed, and the torch generator forked and seeded from the
task, model and seed), so whichever cell trains it gets bitwise the same weights, loss curve and
measured training time. With a ``ModelStore`` (cells of a run get one under the run directory)
the first cell to need a model trains and stores it and later cells load it: a suite whose mpc
protocol trains like its dynamics protocol trains each model once (GrBAL controls with the model
it meta-trained, Nagabandi, Clavera et al. 2019), and the rows do not depend on which cell ran
first, on ``--jobs``, or on a resume.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from meta import MetaMAML, TaskBatch
from models import SequenceModel, make_model
from suites.data import Normalizer, TaskData, collect, fit_normalizer
from suites.protocols.dynamics_training.settings import TrainingSettings
from suites.protocols.dynamics_training.windows import sample_windows, split_episodes, to_windows
from suites.storage import atomic_write
from suites.tasks import TaskParams, get_distribution

log = logging.getLogger(__name__)

TRAINING_ARMS = ("maml", "pretrain")
"""``maml``: MetaMAML (Finn et al. 2017); ``pretrain``: joint training on the same windows, same steps."""


def masked_mse(pred: Tensor, target: Tensor) -> Tensor:
    """MSE over the steps whose mask is 1; ``target`` is [y, mask] along the last dim.

    A window that crosses an episode reset (an early termination, as on ant tasks) masks the
    steps after the reset, where the model's state would carry over from another episode. With
    no reset in any window this equals plain MSE.
    """
    y, valid = target[..., :-1], target[..., -1]
    per_step = (pred - y).pow(2).mean(-1)
    return (per_step * valid).sum() / valid.sum().clamp(min=1.0)


@dataclasses.dataclass(frozen=True)
class Windows:
    """Normalised support and query windows, (tasks, windows, L, D) each.

    The targets carry a last channel: 1 where the step is in the window's first episode, 0
    after a reset inside the window (see ``masked_mse``).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    _support_xy: Tensor = dataclasses.field(init=False, repr=False, compare=False)
    _query_xy: Tensor = dataclasses.field(init=False, repr=False, compare=False)

    @classmethod
    def from_data(cls, data: TaskData, s: TrainingSettings) -> Windows:
        xy = torch.cat([data.inputs, data.targets, data.starts.unsqueeze(-1).float()], dim=-1)
        support, query = split_episodes(xy, s.support_episodes)
        support, query = to_windows(support, s.sequence_length), to_windows(query, s.sequence_length)
        d = data.inputs.shape[-1]

        def with_valid(w: Tensor) -> Tensor:
            starts = w[..., -1].clone()
            starts[..., 0] = 0.0  # a window may begin at an episode start
            valid = (starts.cumsum(-1) == 0).float().unsqueeze(-1)
            return torch.cat([w[..., d:-1], valid], dim=-1)

        return cls(support[..., :d], with_valid(support), query[..., :d], with_valid(query))

    def __post_init__(self) -> None:
        # [x, y] of support and query, joined once: every training step samples from them
        object.__setattr__(self, "_support_xy", torch.cat([self.support_x, self.support_y], -1))
        object.__setattr__(self, "_query_xy", torch.cat([self.query_x, self.query_y], -1))

    def batch(self, task_idx: np.ndarray, s: TrainingSettings, rng: np.random.Generator) -> TaskBatch:
        d = self.support_x.shape[-1]
        support = sample_windows(self._support_xy, task_idx, s.support_windows, rng)
        query = sample_windows(self._query_xy, task_idx, s.query_windows, rng)
        return TaskBatch(support[..., :d], support[..., d:], query[..., :d], query[..., d:])


def train_maml(maml: MetaMAML, train: Windows, s: TrainingSettings, rng: np.random.Generator) -> list[float]:
    """``s.meta_iterations`` outer steps on ``s.meta_batch`` random tasks; the loss of every step."""
    n_tasks = train.support_x.shape[0]
    losses = []
    for _ in range(s.meta_iterations):
        idx = rng.choice(n_tasks, size=min(s.meta_batch, n_tasks), replace=False)
        losses.append(maml.meta_update(train.batch(idx, s, rng)))
    return losses


def pretrain(model: SequenceModel, train: Windows, s: TrainingSettings, rng: np.random.Generator) -> list[float]:
    """Joint training: the same tasks, windows and number of steps as MAML, no inner loop."""
    optimizer = torch.optim.Adam(model.parameters(), lr=s.outer_lr)
    n_tasks = train.support_x.shape[0]
    losses = []
    for _ in range(s.meta_iterations):
        idx = rng.choice(n_tasks, size=min(s.meta_batch, n_tasks), replace=False)
        b = train.batch(idx, s, rng)
        x = torch.cat([b.support_x, b.query_x], 1).flatten(0, 1)  # (n * 2K, L, D)
        y = torch.cat([b.support_y, b.query_y], 1).flatten(0, 1)
        pred, _ = model(x, model.init_state(x.shape[0]))
        loss = masked_mse(pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@dataclasses.dataclass(frozen=True)
class TrainedDynamics:
    """A trained dynamics model and how it was trained.

    Attributes:
        model: the trained model, in eval mode.
        normalizer: the training tasks' statistics the model was trained with.
        losses: the training loss of every iteration (the meta-loss for ``maml``).
        train_time_s: wall time of the training loop where it ran.
    """

    model: SequenceModel
    normalizer: Normalizer
    losses: list[float]
    train_time_s: float

    def curve(self, every: int) -> list[tuple[int, float]]:
        """(iteration, loss) every ``every`` iterations and at the last one."""
        last = len(self.losses) - 1
        return [(it, loss) for it, loss in enumerate(self.losses) if it % every == 0 or it == last]


@dataclasses.dataclass(frozen=True)
class TrainingKey:
    """Everything a trained dynamics model depends on.

    A protocol's settings given as ``settings`` are cut to their training fields (``training()``),
    so the key, its hash and its file name depend on those alone: protocols whose training
    fields are equal share one trained model.
    """

    task: str
    model: str
    param_budget: int
    seed: int
    arm: str
    settings: TrainingSettings

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", self.settings.training())

    def file_name(self) -> str:
        """``<task>__<model>__<arm>__s<seed>__<hash of the whole key>.pt``."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return f"{self.task}__{self.model}__{self.arm}__s{self.seed}__{digest}.pt".replace("+", "plus")


class ModelStore:
    """Trained dynamics models of one run, one torch file each, written atomically.

    Args:
        directory: where the files go (created on the first save).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: TrainingKey) -> Path:
        return self.directory / key.file_name()

    def load(self, key: TrainingKey) -> tuple[dict[str, Tensor], list[float], float] | None:
        """(state_dict, losses, train_time_s) stored under ``key``, or None if there is none."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or foreign file: train again, and say which
            log.warning("%s: unreadable stored model (%s); training it again", path, f"{err}".splitlines()[0][:200])
            return None
        if not isinstance(blob, dict) or blob.get("key") != json.dumps(dataclasses.asdict(key), sort_keys=True):
            return None  # a hash collision, or a file from another key: train instead
        return blob["state_dict"], list(blob["losses"]), float(blob["train_time_s"])

    def save(self, key: TrainingKey, model: SequenceModel, losses: list[float], train_time_s: float) -> None:
        """Store a trained model under ``key`` (replacing any file there, atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        blob = {
            "key": json.dumps(dataclasses.asdict(key), sort_keys=True),
            "state_dict": model.state_dict(),
            "losses": losses,
            "train_time_s": train_time_s,
        }
        atomic_write(self.path(key), lambda tmp: torch.save(blob, tmp))


def training_data(task: str, seed: int, s: TrainingSettings) -> TaskData:
    """The seeded random-policy episodes of the training tasks (raw, not normalised)."""
    return _training_data(task, seed, s.train_tasks, s.episodes_per_task, s.horizon)


def training_tasks(task: str, seed: int, count: int) -> tuple[list[TaskParams], np.random.Generator]:
    """The seed's training tasks, and the seed's generator after sampling them: window sampling
    (and the mpc oracle's training) continues from there."""
    rng = np.random.default_rng(seed)
    return get_distribution(task).sample(count, rng), rng


@functools.lru_cache(maxsize=8)
def _training_data(task: str, seed: int, train_tasks: int, episodes: int, horizon: int) -> TaskData:
    # Cached per worker: the cells of one seed (models, arms, protocols) share the data; it is
    # seeded, and nothing downstream writes into it.
    params, _ = training_tasks(task, seed, train_tasks)
    return collect(get_distribution(task), params, episodes, horizon, seed=seed)


def _init_seed(task: str, model: str, seed: int) -> int:
    """Seed of the initial weights: one per task, model and seed (so maml and pretrain start alike)."""
    return int.from_bytes(hashlib.sha256(f"{task}/{model}/{seed}".encode()).digest()[:4], "little")


def train_dynamics(key: TrainingKey, store: ModelStore | None = None) -> TrainedDynamics:
    """The model ``key`` describes, trained or loaded from ``store`` (and stored there if trained).

    Args:
        key: task, model, budget, seed, arm ("maml" or "pretrain") and training settings.
        store: the run's trained models, or None to always train.

    Returns:
        The trained model (eval mode), its normalizer, per-iteration losses and training time.
    """
    if key.arm not in TRAINING_ARMS:
        raise ValueError(f"training arm: expected one of {list(TRAINING_ARMS)}, got {key.arm!r}")
    s = key.settings
    _, rng = training_tasks(key.task, key.seed, s.train_tasks)
    data = training_data(key.task, key.seed, s)
    normalizer = fit_normalizer(data)
    with torch.random.fork_rng(devices=[]):  # the caller's torch stream is left as it was
        torch.manual_seed(_init_seed(key.task, key.model, key.seed))
        model = make_model(key.model, data.inputs.shape[-1], data.targets.shape[-1], param_budget=key.param_budget)
        stored = store.load(key) if store is not None else None
        if stored is not None:
            state_dict, losses, seconds = stored
            model.load_state_dict(state_dict)
            return TrainedDynamics(model.eval(), normalizer, losses, seconds)
        windows = Windows.from_data(normalizer.apply(data), s)
        start = time.perf_counter()
        if key.arm == "maml":
            maml = MetaMAML(model, inner_lr=s.inner_lr, outer_lr=s.outer_lr, num_inner_steps=s.inner_steps,
                            first_order=s.first_order, loss_fn=masked_mse)  # fmt: skip
            losses = train_maml(maml, windows, s, rng)
        else:
            losses = pretrain(model, windows, s, rng)
        seconds = time.perf_counter() - start
    if store is not None:
        store.save(key, model, losses, seconds)
    return TrainedDynamics(model.eval(), normalizer, losses, seconds)
