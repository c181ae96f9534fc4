"""The SSM's fused step weights: equal to the differentiable step and to sequence mode, from
any state layout, and not used in a precision without a complex counterpart. When they are
formed and reused, and that they are never stale, is tested for every such model in
tests/models/test_step_cache.py.
"""

from __future__ import annotations

import pytest
import torch

from models.ssm import SSM
from tests.models.pytree_error import max_abs_error
from tests.models.step_cache_cases import IN, SSM_CASE, TOL, count_builds


def _model(dtype: torch.dtype = torch.float32) -> SSM:
    model = SSM_CASE.model(dtype=dtype)
    assert isinstance(model, SSM)
    return model


def _inputs(model: SSM, batch: int = 5) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    x, state = SSM_CASE.inputs(model, batch)
    return x, state


def _fresh_error(model: SSM, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> float:
    return SSM_CASE.fresh_error(model, x, state)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the times the fused weights are formed."""
    return count_builds(SSM, monkeypatch)


# ---- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 48])
def test_fused_step_equals_differentiable_step_and_sequence(batch: int, builds: list[int]) -> None:
    model = _model()
    x, state = _inputs(model, batch)
    assert _fresh_error(model, x, state) <= TOL
    assert builds == [1], "the no-grad step did not take the fused path"
    with torch.no_grad():
        y, new_state = model(x, state)
        y_seq, s_seq = model(x.unsqueeze(1), state)
    assert max_abs_error(y, y_seq[:, 0]) <= TOL
    assert max_abs_error(new_state, s_seq) <= TOL
    assert all(s.is_contiguous() for s in new_state)


def test_fused_step_in_float64_equals_differentiable_step_to_rounding() -> None:
    model = _model(dtype=torch.float64)
    x, state = _inputs(model, 7)
    assert _fresh_error(model, x, state) <= 1e-12
    with torch.no_grad():
        y, new_state = model(x, state)
    assert y.dtype == torch.float64 and all(s.dtype == torch.float64 for s in new_state)


def test_many_fused_steps_equal_sequence_mode() -> None:
    """Thirty steps as the MPC planner takes them, against one pass over the sequence."""
    model = _model()
    _, state = _inputs(model, 48)
    xs = torch.randn(48, 30, IN)
    with torch.no_grad():
        y_seq, s_seq = model(xs, state)
        s, ys = state, []
        for t in range(30):
            y_t, s = model(xs[:, t], s)
            ys.append(y_t)
    assert max_abs_error(torch.stack(ys, 1), y_seq) <= TOL
    assert max_abs_error(s, s_seq) <= TOL


def test_fused_step_from_strided_states() -> None:
    """States the fused step must copy before viewing them as complex: the strided final state
    of sequence mode, and a contiguous state at an odd storage offset."""
    model = _model()
    x, _ = _inputs(model, 3)
    with torch.no_grad():
        _, from_sequence = model(torch.randn(3, 7, IN), model.init_state(3))
        assert not all(s.is_contiguous() for s in from_sequence), "nothing strided was tested"
        odd = tuple(torch.randn(1 + s.numel())[1:].view(s.shape) for s in from_sequence)
        assert all(s.is_contiguous() and s.storage_offset() % 2 == 1 for s in odd)
    for state in (from_sequence, odd):
        assert _fresh_error(model, x, state) <= TOL
        with torch.no_grad():
            y_seq, s_seq = model(x.unsqueeze(1), state)
            y, new_state = model(x, state)
        assert max_abs_error(y, y_seq[:, 0]) <= TOL
        assert max_abs_error(new_state, s_seq) <= TOL


def test_bfloat16_model_steps_on_the_differentiable_path(builds: list[int]) -> None:
    """No complex counterpart for the recurrence in bfloat16: nothing is fused or cached."""
    model = _model().to(torch.bfloat16)
    x, state = _inputs(model)
    with torch.no_grad():
        y, _ = model(x, state)
        reference, _ = model._differentiable_step(x, state)
    assert y.dtype == torch.bfloat16
    assert max_abs_error(y, reference) == 0.0
    assert model._step_cache.value is None and builds == [1]
