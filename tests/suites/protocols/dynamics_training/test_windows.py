"""Windows for the dynamics protocol: episodes split, resets inside a window masked."""

from __future__ import annotations

import numpy as np
import torch

from suites.data import TaskData
from suites.protocols.dynamics.protocol import DynamicsSettings
from suites.protocols.dynamics_training.train import Windows, masked_mse
from suites.tasks import get_distribution


def _data(starts: torch.Tensor) -> TaskData:
    k, e, t = starts.shape
    dist = get_distribution("pendulum-mass-length")
    inputs = torch.arange(k * e * t * 4, dtype=torch.float32).reshape(k, e, t, 4)
    return TaskData(inputs, inputs[..., :3] * 10, starts, torch.zeros(k, e, t), tuple(dist.test_tasks(k)),
                    dist.name, 3, 1)  # fmt: skip


def test_masked_mse_equals_mse_without_resets_and_ignores_masked_steps() -> None:
    pred, y = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    ones = torch.ones(2, 5, 1)
    torch.testing.assert_close(masked_mse(pred, torch.cat([y, ones], -1)), torch.nn.functional.mse_loss(pred, y))
    mask = ones.clone()
    mask[1, 3:] = 0
    y_bad = y.clone()
    y_bad[1, 3:] = 1e6  # masked steps cannot matter
    expected = torch.cat([(pred[0] - y[0]).pow(2).mean(-1), (pred[1, :3] - y[1, :3]).pow(2).mean(-1)]).mean()
    torch.testing.assert_close(masked_mse(pred, torch.cat([y_bad, mask], -1)), expected)


def test_windows_split_episodes_and_mask_steps_after_a_reset() -> None:
    starts = torch.zeros(2, 4, 20, dtype=torch.bool)
    starts[..., 0] = True
    starts[1, 3, 13] = True  # an early termination in task 1, episode 3 (a query episode)
    s = DynamicsSettings(episodes_per_task=4, support_episodes=2, horizon=20, sequence_length=10)
    w = Windows.from_data(_data(starts), s.training())
    assert w.support_x.shape == (2, 4, 10, 4) and w.query_y.shape == (2, 4, 10, 4)  # 3 targets + mask
    # support windows come from episodes 0-1, query windows from episodes 2-3
    data = _data(starts)
    torch.testing.assert_close(w.support_x[0, 0], data.inputs[0, 0, :10])
    torch.testing.assert_close(w.query_x[0, 0], data.inputs[0, 2, :10])
    assert w.support_y[..., -1].all()
    valid = w.query_y[1, 3, :, -1]  # episode 3, steps 10..19: reset at step 13
    assert valid.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert w.query_y[0, ..., -1].all()
    batch = w.batch(np.array([1, 0]), s.training(), np.random.default_rng(0))
    assert batch.support_x.shape == (2, s.support_windows, 10, 4)
