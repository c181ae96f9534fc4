"""The dynamics protocol's online error: the batched and prequential paths equal plain loops."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptation import AdaptationConfig, Adapter
from models import make_model
from suites.protocols.base import Cell
from suites.protocols.dynamics import protocol as dynamics
from suites.protocols.dynamics.protocol import DynamicsSettings, _online_errors
from suites.protocols.dynamics_training.train import Windows
from suites.protocols.dynamics_training.windows import sample_windows
from suites.runner import cell_seed, expand_cells, seed_everything
from suites.spec import load_suite
from tests.suites.tiny import write_tiny_suite

S = DynamicsSettings(streams=3, stream_horizon=24, switch_at=12, adapter_window=5, adapter_steps=2)
IN, OUT = 4, 3


def _streams(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(S.streams):
        starts = torch.zeros(1, S.stream_horizon, dtype=torch.bool)
        starts[0, 0] = True
        if i == 1:
            starts[0, 7] = True  # an episode reset inside a window
        out.append((torch.randn(1, S.stream_horizon, IN, generator=g), torch.randn(1, S.stream_horizon, OUT,
                    generator=g), starts))  # fmt: skip
    return out


def _reference(model: torch.nn.Module, streams: list, with_adapter: bool) -> list[float]:
    """One stream at a time: predict each window, then (with the Adapter) adapt on it."""
    cfg = AdaptationConfig(lr=S.adapter_lr, num_steps=S.adapter_steps, optimizer=S.adapter_optimizer,
                           grad_clip_norm=1.0)  # fmt: skip
    adapter = Adapter(model, cfg, strategy="online")
    errors = []
    for x, y, starts in streams:
        with adapter.session():
            state, per_step = model.init_state(1), []
            for t in range(0, S.stream_horizon, S.adapter_window):
                xw, yw, rw = (v[:, t : t + S.adapter_window] for v in (x, y, starts))
                with torch.no_grad():
                    pred, next_state = model(xw, state, reset=rw)
                per_step.append((pred - yw).pow(2).mean(-1)[0])
                if with_adapter:
                    adapter.adapt({"x": xw, "y": yw, "state": state, "reset": rw})
                state = next_state
            errors.append(torch.cat(per_step))
    return torch.stack(errors).mean(0).tolist()


@pytest.mark.parametrize("name", ["lstm", "ssm", "transformer", "mlp"])
@pytest.mark.parametrize("with_adapter", [False, True])
def test_online_errors_equal_the_per_stream_loop(name: str, with_adapter: bool) -> None:
    torch.manual_seed(0)
    model = make_model(name, IN, OUT, hidden_dim=16).eval()
    reference = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = _online_errors(model, _streams(), S, with_adapter)
    expected = _reference(reference, _streams(), with_adapter)
    assert len(got) == S.stream_horizon
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the Adapter's session restored the weights


def test_windows_batch_samples_the_joined_support_and_query() -> None:
    g = torch.Generator().manual_seed(0)
    w = Windows(*(torch.randn(5, 6, 4, d, generator=g) for d in (IN, OUT + 1, IN, OUT + 1)))
    s = DynamicsSettings(support_windows=3, query_windows=2)
    idx = np.array([4, 0, 2])
    batch = w.batch(idx, s.training(), np.random.default_rng(7))
    rng = np.random.default_rng(7)
    support = sample_windows(torch.cat([w.support_x, w.support_y], -1), idx, 3, rng)
    query = sample_windows(torch.cat([w.query_x, w.query_y], -1), idx, 2, rng)
    assert torch.equal(batch.support_x, support[..., :IN]) and torch.equal(batch.support_y, support[..., IN:])
    assert torch.equal(batch.query_x, query[..., :IN]) and torch.equal(batch.query_y, query[..., IN:])


def test_a_cell_after_another_of_its_seed_reports_what_it_reports_alone(tmp_path: Path) -> None:
    """The cached data of one seed serve its other cells without changing a row (or a random stream)."""
    suite = load_suite(str(write_tiny_suite(tmp_path)))
    cells = [c for c in expand_cells(suite) if c.protocol == "dynamics" and c.seed == 1]
    first = cells[0]
    second = next(c for c in cells if c.model != first.model and c.training_arm != first.training_arm)

    def rows(cell: Cell) -> list[tuple]:
        seed_everything(cell_seed(cell))
        return [tuple(m) for m in dynamics.run(cell) if not m.metric.startswith("time_")]

    dynamics._cell_data.cache_clear()
    alone = rows(second)
    dynamics._cell_data.cache_clear()
    rows(first)
    after = rows(second)
    assert dynamics._cell_data.cache_info().hits == 1
    assert after == alone
