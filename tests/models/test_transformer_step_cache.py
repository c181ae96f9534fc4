"""The transformer's fused step weights: equal to the differentiable step and to sequence mode
with an empty, partly full or full cache, in float32 and float64, over long streams with resets.
When they are formed and reused, and that they are never stale, is tested for every such model
in tests/models/test_step_cache.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from models.transformer import Transformer
from tests.models.pytree_error import max_abs_error
from tests.models.step_cache_cases import IN, TOL, TRANSFORMER_CASE, WINDOW, count_builds


def _model(dtype: torch.dtype = torch.float32) -> Transformer:
    model = TRANSFORMER_CASE.model(dtype=dtype)
    assert isinstance(model, Transformer)
    return model


def _inputs(model: Transformer, batch: int = 5, history: int = 2) -> tuple[Tensor, tuple]:
    """A step input and the state after ``history`` steps (2: empty slots; >= W - 1: full)."""
    return TRANSFORMER_CASE.inputs(model, batch, history=history)


def _fresh_error(model: Transformer, x: Tensor, state: tuple) -> float:
    return TRANSFORMER_CASE.fresh_error(model, x, state)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the times the fused weights are formed."""
    return count_builds(Transformer, monkeypatch)


# ---- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 48])
@pytest.mark.parametrize("history", [0, 2, 9])  # empty cache, some empty slots, a full cache
def test_fused_step_equals_differentiable_step_and_sequence(batch: int, history: int, builds: list[int]) -> None:
    model = _model()
    x, state = _inputs(model, batch, history=history)
    assert state[0].all() == (history >= WINDOW - 1)
    assert _fresh_error(model, x, state) <= TOL
    assert builds == [1], "the no-grad step did not take the fused path"
    with torch.no_grad():
        y, new_state = model(x, state)
        y_seq, s_seq = model(x.unsqueeze(1), state)
    assert max_abs_error(y, y_seq[:, 0]) <= TOL
    assert max_abs_error(new_state, s_seq) <= TOL


def test_fused_step_in_float64_equals_differentiable_step_to_rounding() -> None:
    model = _model(dtype=torch.float64)
    for history in (2, 9):
        x, state = _inputs(model, 7, history=history)
        assert _fresh_error(model, x, state) <= 1e-12
        with torch.no_grad():
            y, new_state = model(x, state)
        assert y.dtype == torch.float64 and all(s.dtype == torch.float64 for s in new_state[1:])


def test_many_fused_steps_with_resets_equal_sequence_mode() -> None:
    """A long planner-sized stream (48 rows, many windows, resets) against one sequence pass."""
    model = _model()
    _, state = _inputs(model, 48, history=3)
    xs = torch.randn(48, 6 * WINDOW, IN)
    reset = torch.rand(48, xs.shape[1]) < 0.05
    reset[0, 7] = reset[1, 3] = reset[1, 5] = True
    with torch.no_grad():
        y_seq, s_seq = model(xs, state, reset=reset)
        s, ys = state, []
        for t in range(xs.shape[1]):
            y_t, s = model(xs[:, t], s, reset=reset[:, t])
            ys.append(y_t)
    assert max_abs_error(torch.stack(ys, 1), y_seq) <= TOL
    assert max_abs_error(s, s_seq) <= TOL
