"""The SSM's fused step weights, formed once and reused without autograd: equal to the
differentiable step, reused while the parameters stay the same, never stale after a change.

Each invalidation test runs a step (which caches the weights), changes the parameters one way
they can change, and checks the next step against the uncached differentiable step of the model
as it is now, and that the change moved the output (so a stale cache would fail the test).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.func import functional_call

from models import make_model
from models.ssm import SSM
from tests.models.pytree_error import max_abs_error

IN, OUT, WIDTH = 4, 3, 10
TOL = 1e-5  # float32; the fused products round differently from the step's elementwise form


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> SSM:
    torch.manual_seed(seed)
    model = make_model("ssm", IN, OUT, hidden_dim=WIDTH, state_dim=6)
    assert isinstance(model, SSM)
    return model.to(dtype)


def _inputs(model: SSM, batch: int = 5, seed: int = 1) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    dtype = model.encoder.weight.dtype
    x = torch.randn(batch, IN, generator=gen, dtype=dtype)
    state = tuple(torch.randn(s.shape, generator=gen, dtype=dtype) for s in model.init_state(batch))
    return x, state


def _fresh_error(model: SSM, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> float:
    """A no-grad step (fused, maybe cached) against the differentiable step of the model now."""
    with torch.no_grad():
        fused = model(x, state)
        reference = model._differentiable_step(x, state)
    return max_abs_error(fused, reference)


def _step(model: SSM, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(x, state)[0]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the times the fused weights are formed."""
    made: list[int] = []
    real = SSM._fuse_step_weights

    def counted(self: SSM) -> object:
        made.append(1)
        return real(self)

    monkeypatch.setattr(SSM, "_fuse_step_weights", counted)
    return made


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


# ---- when the cache is used ------------------------------------------------------------------


def test_weights_are_formed_once_while_the_parameters_stay(builds: list[int]) -> None:
    model = _model()
    x, state = _inputs(model)
    first = _step(model, x, state)
    for _ in range(5):
        assert torch.equal(_step(model, x, state), first)
    assert builds == [1]


def test_with_autograd_on_the_step_differentiates_and_caches_nothing(builds: list[int]) -> None:
    model = _model()
    x, state = _inputs(model)
    _step(model, x, state)  # cached
    y, _ = model(x, state)
    assert y.requires_grad
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert max_abs_error(y, model(x, state)[0]) <= TOL
    assert builds == [1]


def test_under_vmap_the_cache_is_not_used(builds: list[int]) -> None:
    """Per-task weights under vmap (the policy sampler's rollouts) take the differentiable step."""
    model = _model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, v * 1.1, v * 0.9]) for k, v in params.items()}
    xs = torch.randn(3, 2, IN)
    states = tuple(torch.randn(3, *s.shape) for s in model.init_state(2))
    with torch.no_grad():
        y, _ = torch.func.vmap(lambda p, x, s: functional_call(model, p, (x, s)))(stacked, xs, states)
        for i in range(3):
            task_model = _with(model, {k: v[i] for k, v in stacked.items()})
            y_i, _ = task_model._differentiable_step(xs[i], tuple(s[i] for s in states))
            assert max_abs_error(y[i], y_i) <= TOL
    assert builds == []


def _with(model: SSM, params: dict[str, torch.Tensor]) -> SSM:
    """A copy of ``model`` holding ``params``."""
    other = copy.deepcopy(model)
    other.load_state_dict(params)
    return other


def test_inference_mode_steps_then_no_grad_steps_agree() -> None:
    model = _model()
    x, state = _inputs(model)
    with torch.inference_mode():
        y_inf, _ = model(x, state)
    assert _fresh_error(model, x, state) <= TOL
    with torch.no_grad():
        assert max_abs_error(model(x, state)[0], y_inf) == 0.0
    y, _ = model(x, state)  # and autograd still works afterwards
    y.sum().backward()


# ---- invalidation: every way the parameters change ---------------------------------------------


def _changed(model: SSM, change, builds: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Cache, apply ``change(model)``, then: a rebuild happened, the step is fresh, the output moved."""
    x, state = _inputs(model)
    before = _step(model, x, state)
    assert builds == [1]
    change(model)
    assert _fresh_error(model, x, state) <= TOL
    assert len(builds) == 2, "the change did not invalidate the cached weights"
    assert (_step(model, x, state) - before).abs().max() > 1e-3, "the change did not move the output"


def _scale_in_place(model: SSM) -> None:
    with torch.no_grad():
        model.blocks[1].recurrence.nu_log.sub_(0.5)  # one leaf of the last layer only


def test_in_place_change_under_no_grad(builds: list[int]) -> None:
    _changed(_model(), _scale_in_place, builds)


def test_in_place_change_of_a_view(builds: list[int]) -> None:
    def change(model: SSM) -> None:
        with torch.no_grad():
            model.blocks[0].recurrence.C[:, 0].mul_(2.0)  # a view shares the version counter

    _changed(_model(), change, builds)


def test_optimizer_step(builds: list[int]) -> None:
    def change(model: SSM) -> None:
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        x, state = _inputs(model, seed=3)
        model(x, state)[0].square().sum().backward()
        opt.step()

    _changed(_model(), change, builds)


@pytest.mark.parametrize("assign", [False, True])
def test_load_state_dict(assign: bool, builds: list[int]) -> None:
    other = _model(seed=5).state_dict()
    _changed(_model(), lambda m: m.load_state_dict(other, assign=assign), builds)


@pytest.mark.parametrize("swap", [False, True])
def test_dtype_round_trip_with_to(swap: bool, builds: list[int]) -> None:
    """.double() then .float() puts new memory under the same Parameter objects, versions unchanged
    (or, with the swap flag, swaps the tensors: the cache must hold no reference that blocks it)."""

    def change(model: SSM) -> None:
        model.double()
        with torch.no_grad():
            model.head.bias.add_(1.0)
        model.float()

    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap)
    try:
        _changed(_model(), change, builds)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)


def test_dtype_change_gives_weights_in_the_new_dtype(builds: list[int]) -> None:
    model = _model()
    x, state = _inputs(model)
    _step(model, x, state)
    model.double()
    x64, s64 = x.double(), tuple(s.double() for s in state)
    assert _fresh_error(model, x64, s64) <= 1e-12
    assert _step(model, x64, s64).dtype == torch.float64
    assert len(builds) == 2


def test_data_assignment(builds: list[int]) -> None:
    def change(model: SSM) -> None:
        p = model.blocks[0].glu_gate.weight
        p.data = p.data * 3.0

    _changed(_model(), change, builds)


def test_swap_tensors(builds: list[int]) -> None:
    def change(model: SSM) -> None:
        p = model.encoder.weight
        torch.utils.swap_tensors(p, nn.Parameter(p.detach() + 0.5))

    _changed(_model(), change, builds)


def test_replaced_submodule(builds: list[int]) -> None:
    def change(model: SSM) -> None:
        torch.manual_seed(9)
        model.blocks[1].glu_value = nn.Linear(WIDTH, WIDTH)

    _changed(_model(), change, builds)


def test_replaced_parameter(builds: list[int]) -> None:
    def change(model: SSM) -> None:
        model.blocks[0].recurrence.D = nn.Parameter(model.blocks[0].recurrence.D.detach() + 1.0)

    _changed(_model(), change, builds)


def test_functional_call_runs_with_the_given_weights_and_then_the_own_again(builds: list[int]) -> None:
    """functional_call swaps the parameters in and back: neither side may see the other's weights."""
    model = _model()
    x, state = _inputs(model)
    own = _step(model, x, state)
    other = {k: v.detach() * 1.2 for k, v in model.named_parameters()}
    reference = _with(model, other)
    with torch.no_grad():
        for _ in range(2):  # the second call reuses the weights formed from ``other``
            y, _ = functional_call(model, other, (x, state))
            assert max_abs_error(y, reference._differentiable_step(x, state)[0]) <= TOL
        assert max_abs_error(model(x, state)[0], own) <= TOL
    assert (y - own).abs().max() > 1e-3
    assert len(builds) == 3  # own, other (reused once), own again


def test_functional_call_with_weights_changed_in_place_between_calls(builds: list[int]) -> None:
    model = _model()
    x, state = _inputs(model)
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        before, _ = functional_call(model, weights, (x, state))
        weights["head.weight"].mul_(-1.0)
        after, _ = functional_call(model, weights, (x, state))
        reference = _with(model, weights)._differentiable_step(x, state)[0]
    assert max_abs_error(after, reference) <= TOL
    assert (after - before).abs().max() > 1e-3


def test_deepcopy_and_pickle_start_with_an_empty_cache(builds: list[int]) -> None:
    model = _model()
    x, state = _inputs(model)
    own = _step(model, x, state)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin._step_cache.value is None
        _scale_in_place(twin)
        assert _fresh_error(twin, x, state) <= TOL
        assert (_step(twin, x, state) - own).abs().max() > 1e-3
    assert max_abs_error(_step(model, x, state), own) == 0.0  # the original keeps its own weights


def test_a_leaf_that_is_not_a_tensor_falls_back_to_the_differentiable_step() -> None:
    """A bias removed (None) cannot be cached: the step runs uncached, with the model as it is."""
    model = _model()
    x, state = _inputs(model)
    _step(model, x, state)
    model.head.bias = None
    with torch.no_grad():
        y, _ = model(x, state)
        reference, _ = model._differentiable_step(x, state)
    assert model._step_cache.value is not None  # the old entry, never returned for this model
    assert max_abs_error(y, reference) == 0.0
