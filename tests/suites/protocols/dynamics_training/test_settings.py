"""TrainingSettings and DynamicsSettings check every field when built, from Python as from a suite
file: types, finiteness, ranges, and the fields that span others (windows against the data)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from suites.protocols.dynamics.protocol import DynamicsSettings
from suites.protocols.dynamics_training.settings import TrainingSettings
from suites.protocols.dynamics_training.windows import sample_windows, split_episodes, to_windows

BASE = {"train_tasks": 8, "sequence_length": 25, "meta_iterations": 10, "inner_lr": 0.1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inner_lr": math.inf}, "inner_lr: expected a finite number, got inf"),
        ({"outer_lr": math.nan}, "outer_lr: expected a finite number, got nan"),
        ({"inner_lr": -math.inf}, "inner_lr: expected a finite number, got -inf"),
        ({"meta_iterations": 2.0}, "meta_iterations: expected an int, got 2.0"),
        ({"horizon": True}, "horizon: expected an int, got True"),
        ({"first_order": 1}, "first_order: expected true/false, got 1"),
        ({"inner_lr": "0.1"}, "inner_lr: expected a finite number, got '0.1'"),
        ({"inner_lr": 0.0}, "inner_lr: expected a positive number, got 0.0"),
        ({"inner_lr": 11.0}, "inner_lr: expected at most 10, got 11.0"),
        ({"horizon": 1_000_001, "sequence_length": 25}, "horizon: expected at most 1000000, got 1000001"),
        ({"meta_iterations": 10**7 + 1}, "meta_iterations: expected at most 10000000, got 10000001"),
        ({"inner_steps": 1001}, "inner_steps: expected at most 1000, got 1001"),
        ({"support_episodes": 4}, "support_episodes: expected between 1 and 3 (episodes_per_task - 1), got 4"),
        ({"sequence_length": 101}, "sequence_length: expected at most the horizon 100, got 101"),
        ({"support_windows": 9}, "support_windows: expected at most 8 (support_episodes 2 x 4 windows of "
                                 "sequence_length 25 in horizon 100), got 9"),
        ({"query_windows": 9}, "query_windows: expected at most 8 (episodes_per_task - support_episodes 2 x 4 "
                               "windows of sequence_length 25 in horizon 100), got 9"),
        ({"sequence_length": 30, "support_windows": 7}, "support_windows: expected at most 6 (support_episodes 2 x 3 "
                                                         "windows of sequence_length 30 in horizon 100), got 7"),
        ({"meta_batch": 9}, "meta_batch: expected at most train_tasks 8, got 9"),
    ],
)  # fmt: skip
def test_training_settings_refuse(change: dict, message: str) -> None:
    for cls in (TrainingSettings, DynamicsSettings):
        with pytest.raises(ValueError) as info:
            cls(**{**BASE, **change})
        assert str(info.value) == message


def test_the_window_limits_are_exact() -> None:
    """At the limit the windows are cut and sampled as training does; one more fails there too."""
    s = TrainingSettings(**BASE, support_windows=8, query_windows=8)
    import numpy as np
    import torch

    data = torch.zeros(2, s.episodes_per_task, s.horizon, 3)
    support, query = split_episodes(data, s.support_episodes)
    support, query = to_windows(support, s.sequence_length), to_windows(query, s.sequence_length)
    rng = np.random.default_rng(0)
    assert sample_windows(support, np.arange(2), s.support_windows, rng).shape[1] == 8
    assert sample_windows(query, np.arange(2), s.query_windows, rng).shape[1] == 8
    with pytest.raises(ValueError, match="expected at most 8 windows per task, asked for 9"):
        sample_windows(support, np.arange(2), 9, rng)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adapter_lr": math.inf}, "adapter_lr: expected a finite number, got inf"),
        ({"adapter_lr": 10.5}, "adapter_lr: expected at most 10, got 10.5"),
        ({"test_tasks": 101}, "test_tasks: expected at most 100, got 101"),
        ({"streams": 10_001}, "streams: expected at most 10000, got 10001"),
        ({"adapter_window": 201}, "adapter_window: expected at most stream_horizon 200, got 201"),
        ({"adapter_optimizer": 3}, "adapter_optimizer: expected a string, got 3"),
        ({"eval_inner_steps": 1001}, "eval_inner_steps: expected at most 1000, got 1001"),
    ],
)
def test_dynamics_settings_refuse(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        DynamicsSettings(**change)
    assert str(info.value) == message


def test_defaults_and_replace_are_checked() -> None:
    s = DynamicsSettings()
    assert s.windows_per_episode() == 4
    with pytest.raises(ValueError, match=r"^inner_lr: expected a finite number, got nan$"):
        dataclasses.replace(s, inner_lr=math.nan)
