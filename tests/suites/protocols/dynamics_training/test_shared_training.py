"""A dynamics model is trained once per run: cells that need the same one load it, and rows do not change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from suites.protocols.base import Cell
from suites.protocols.dynamics import protocol as dynamics
from suites.protocols.dynamics.protocol import DynamicsSettings
from suites.protocols.dynamics_training.settings import TRAINING_FIELDS, TrainingSettings
from suites.protocols.dynamics_training.train import ModelStore, TrainingKey, train_dynamics
from suites.protocols.mpc import protocol as mpc
from suites.protocols.mpc.protocol import MPCSettings
from suites.spec import load_suite

TASK = "pendulum-mass-length"
TRAINING = TrainingSettings(
    train_tasks=3, episodes_per_task=2, support_episodes=1, horizon=12, sequence_length=6, support_windows=2,
    query_windows=2, meta_iterations=3, meta_batch=2, inner_steps=1, inner_lr=0.05, outer_lr=3e-3,
)  # fmt: skip
DYNAMICS = DynamicsSettings(**dataclasses.asdict(TRAINING), test_tasks=2, log_every=1, streams=1, stream_horizon=12,
                            switch_at=6, adapter_window=4, timing_repeats=1)  # fmt: skip
MPC = MPCSettings(**dataclasses.asdict(TRAINING), test_tasks=1, episode_steps=5, plan_horizon=3, candidates=6,
                  cem_iterations=1, elites=2, adapt_window=3, adapt_every=2, adapter_every=2,
                  oracle_episodes=2)  # fmt: skip


def _key(**change: object) -> TrainingKey:
    return dataclasses.replace(TrainingKey(TASK, "mlp", 2000, 0, "maml", TRAINING), **change)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_stored_model_loads_bitwise_equal_and_leaves_the_torch_stream_alone(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    trained = train_dynamics(_key(), store)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert store.path(_key()).is_file()
    assert len(trained.losses) == TRAINING.meta_iterations

    torch.manual_seed(999)  # another cell's stream: the model must not depend on it
    loaded = train_dynamics(_key(), store)
    retrained = train_dynamics(_key(), None)
    for other in (loaded, retrained):
        got = _weights(other.model)
        assert got.keys() == _weights(trained.model).keys()
        assert all(torch.equal(got[k], v) for k, v in _weights(trained.model).items())
        assert torch.equal(other.normalizer.input_mean, trained.normalizer.input_mean)
    assert loaded.losses == trained.losses and loaded.train_time_s == trained.train_time_s
    assert retrained.losses == trained.losses
    assert not loaded.model.training


def test_a_stored_model_is_found_only_under_its_whole_key(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    train_dynamics(_key(), store)
    changes: list[dict[str, object]] = [
        {"task": "pendulum-mass-length-other"}, {"model": "gru"}, {"param_budget": 3000}, {"seed": 1},
        {"arm": "pretrain"}, {"settings": dataclasses.replace(TRAINING, inner_lr=0.1)},
        {"settings": dataclasses.replace(TRAINING, meta_iterations=4)},
    ]  # fmt: skip
    names = {store.path(_key(**change)).name for change in changes}
    assert len(names) == len(changes) and store.path(_key()).name not in names
    assert store.load(_key(seed=1)) is None


def test_a_file_of_another_key_under_this_name_is_not_used(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    train_dynamics(_key(seed=1), store)
    store.path(_key(seed=1)).rename(store.path(_key()))  # as a hash collision would look
    assert store.load(_key()) is None


def test_a_truncated_stored_model_is_trained_again_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(tmp_path)
    first = train_dynamics(_key(), store)
    path = store.path(_key())
    path.write_bytes(path.read_bytes()[:100])
    assert store.load(_key()) is None
    assert str(path) in caplog.text and "unreadable stored model" in caplog.text
    again = train_dynamics(_key(), store)
    assert again.losses == first.losses
    assert store.load(_key()) is not None  # stored again, whole


def test_an_unknown_training_arm_is_refused() -> None:
    with pytest.raises(ValueError, match=r"training arm: expected one of .*'maml'.*got 'oracle'"):
        train_dynamics(_key(arm="oracle"))


def test_the_mpc_cell_reuses_the_dynamics_cells_model_with_the_rows_it_reports_alone(tmp_path: Path) -> None:
    """Training settings in common: the mpc cell loads the model the dynamics cell trained, and
    reports exactly what it reports when it trains the model itself; the dynamics cell's rows too."""
    assert MPC.training() == DYNAMICS.training()

    def cell(protocol: str, settings: object, arms: tuple[str, ...], store: Path | None) -> Cell:
        return Cell("t", protocol, TASK, "mlp", "maml", 0, arms, 2000, settings, str(store) if store else None)

    def rows(c: Cell) -> list[tuple]:
        torch.manual_seed(7)
        run = dynamics.run if c.protocol == "dynamics" else mpc.run
        return [tuple(m) for m in run(c) if m.metric not in ("plan_ms", "time_adapt_ms", "time_step_ms")]

    mpc_alone = rows(cell("mpc", MPC, ("unadapted", "maml"), None))
    dynamics_alone = rows(cell("dynamics", DYNAMICS, ("maml",), None))
    shared = tmp_path / "models"
    dynamics_first = rows(cell("dynamics", DYNAMICS, ("maml",), shared))
    assert len(list(shared.iterdir())) == 1
    mpc_after = rows(cell("mpc", MPC, ("unadapted", "maml"), shared))
    assert len(list(shared.iterdir())) == 1  # loaded, not trained again under another name
    assert mpc_after == mpc_alone
    # the stored training time is reported again, so compare the rest of the dynamics rows
    assert [r for r in dynamics_first if r[1] != "time_meta_train_s"] == [
        r for r in dynamics_alone if r[1] != "time_meta_train_s"
    ]


def test_mpc_settings_keep_online_and_meta_training_learning_rates_apart() -> None:
    assert MPC.online_lr == MPC.inner_lr
    split = dataclasses.replace(MPC, adapt_lr=0.01)
    assert split.online_lr == 0.01 and split.training() == MPC.training()
    with pytest.raises(ValueError, match="adapt_lr: expected a positive number, got -1"):
        dataclasses.replace(MPC, adapt_lr=-1.0)


def test_the_quick_suites_mpc_trains_like_its_dynamics_protocol() -> None:
    """So the main job meta-trains each dynamics model once per seed (its mpc cells load it)."""
    settings = {p.protocol: p.settings for p in load_suite("quick").protocols}
    assert settings["mpc"].training() == settings["dynamics"].training()


def test_protocol_settings_are_training_settings_with_their_own_fields_after() -> None:
    """The training fields are declared once; suite files still write them flat in each table."""
    for cls in (DynamicsSettings, MPCSettings):
        assert issubclass(cls, TrainingSettings)
        assert tuple(f.name for f in dataclasses.fields(cls))[: len(TRAINING_FIELDS)] == TRAINING_FIELDS
    assert type(DYNAMICS.training()) is TrainingSettings and type(MPC.training()) is TrainingSettings
    assert dataclasses.asdict(DYNAMICS.training()) == dataclasses.asdict(TRAINING)
    assert TRAINING.training() is TRAINING
    # each protocol's own defaults only where they differ
    dynamics, mpc = dataclasses.asdict(DynamicsSettings().training()), dataclasses.asdict(MPCSettings().training())
    assert {k for k in TRAINING_FIELDS if dynamics[k] != mpc[k]} == {
        "train_tasks", "sequence_length", "meta_iterations", "inner_lr"
    }  # fmt: skip
    with pytest.raises(ValueError, match="meta_batch: expected a positive number, got 0"):
        dataclasses.replace(TRAINING, meta_batch=0)


def test_a_key_holds_the_training_fields_alone_and_its_file_name_is_stable() -> None:
    """A key made from a protocol's settings is the key of its training fields: the dynamics and
    mpc cells share one file, and the names of run directories made before stay valid."""
    assert TrainingKey(TASK, "mlp", 2000, 0, "maml", DYNAMICS) == _key()
    assert TrainingKey(TASK, "mlp", 2000, 0, "maml", MPC).file_name() == _key().file_name()
    quick = {p.protocol: p.settings for p in load_suite("quick").protocols}
    for protocol in ("dynamics", "mpc"):
        key = TrainingKey(TASK, "mlp", 20000, 0, "maml", quick[protocol])
        assert key.file_name() == "pendulum-mass-length__mlp__maml__s0__1539191c2eeea8c4.pt"
