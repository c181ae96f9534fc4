"""The transformer's fused step weights, formed once and reused without autograd: equal to the
differentiable step and to sequence mode, reused while the parameters stay the same, never stale
after a change (the same promises as the SSM's, tests/models/test_ssm_step_cache.py).

Each invalidation test runs a step (which caches the weights), changes the parameters one way
they can change, and checks the next step against the uncached differentiable step of the model
as it is now, and that the change moved the output (so a stale cache would fail the test).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from models import make_model
from models.transformer import Transformer
from tests.models.pytree_error import max_abs_error

IN, OUT, WIDTH, WINDOW = 4, 3, 10, 5
TOL = 1e-5  # float32; the fused products round differently from the step's


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> Transformer:
    torch.manual_seed(seed)
    model = make_model("transformer", IN, OUT, hidden_dim=WIDTH, num_heads=3, window=WINDOW)
    assert isinstance(model, Transformer)
    return model.to(dtype).eval()


def _inputs(model: Transformer, batch: int = 5, seed: int = 1, history: int = 2) -> tuple[Tensor, tuple]:
    """A step input and the state after ``history`` steps (2: empty slots; >= W - 1: full)."""
    gen = torch.Generator().manual_seed(seed)
    dtype = model.encoder.weight.dtype
    x = torch.randn(batch, IN, generator=gen, dtype=dtype)
    state = model.init_state(batch)
    if history:
        with torch.no_grad():
            _, state = model(torch.randn(batch, history, IN, generator=gen, dtype=dtype), state)
    return x, state


def _reference_step(model: Transformer, x: Tensor, state: tuple) -> tuple[Tensor, tuple]:
    """The uncached differentiable step of the model as it is now."""
    seen = F.pad(state[0], (0, 1), value=True)
    mask = torch.where(seen, 0.0, float("-inf")).unsqueeze(1)
    return model._differentiable_step(x, seen[:, 1:], state[1:], mask)


def _fresh_error(model: Transformer, x: Tensor, state: tuple) -> float:
    """A no-grad step (fused, maybe cached) against the differentiable step of the model now."""
    with torch.no_grad():
        return max_abs_error(model(x, state), _reference_step(model, x, state))


def _step(model: Transformer, x: Tensor, state: tuple) -> Tensor:
    with torch.no_grad():
        return model(x, state)[0]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the times the fused weights are formed."""
    made: list[int] = []
    real = Transformer._fuse_step_weights

    def counted(self: Transformer) -> object:
        made.append(1)
        return real(self)

    monkeypatch.setattr(Transformer, "_fuse_step_weights", counted)
    return made


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
    _, state = _inputs(model, 2)
    states = tuple(s.expand(3, *s.shape).clone() for s in state)
    with torch.no_grad():
        y, _ = torch.func.vmap(lambda p, x, s: functional_call(model, p, (x, s)))(stacked, xs, states)
        for i in range(3):
            task_model = _with(model, {k: v[i] for k, v in stacked.items()})
            y_i, _ = _reference_step(task_model, xs[i], state)
            assert max_abs_error(y[i], y_i) <= TOL
    assert builds == []


def _with(model: Transformer, params: dict[str, Tensor]) -> Transformer:
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


def _changed(model: Transformer, change, builds: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Cache, apply ``change(model)``, then: a rebuild happened, the step is fresh, the output moved."""
    x, state = _inputs(model)
    before = _step(model, x, state)
    assert builds == [1]
    change(model)
    assert _fresh_error(model, x, state) <= TOL
    assert len(builds) == 2, "the change did not invalidate the cached weights"
    assert (_step(model, x, state) - before).abs().max() > 1e-3, "the change did not move the output"


def _scale_in_place(model: Transformer) -> None:
    with torch.no_grad():
        model.blocks[1].attn.rel_bias.mul_(-3.0)  # one leaf of the last layer only


def test_in_place_change_under_no_grad(builds: list[int]) -> None:
    _changed(_model(), _scale_in_place, builds)


def test_in_place_change_of_a_view(builds: list[int]) -> None:
    def change(model: Transformer) -> None:
        with torch.no_grad():
            model.blocks[0].attn.qkv.weight[:, 0].mul_(4.0)  # a view shares the version counter

    _changed(_model(), change, builds)


def test_optimizer_step(builds: list[int]) -> None:
    def change(model: Transformer) -> None:
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

    def change(model: Transformer) -> None:
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


def test_data_assignment(builds: list[int]) -> None:
    def change(model: Transformer) -> None:
        p = model.blocks[0].mlp[2].weight
        p.data = p.data * 3.0

    _changed(_model(), change, builds)


def test_swap_tensors(builds: list[int]) -> None:
    def change(model: Transformer) -> None:
        p = model.encoder.weight
        torch.utils.swap_tensors(p, nn.Parameter(p.detach() * -2.0))  # (+ c: LayerNorm hides it)

    _changed(_model(), change, builds)


def test_replaced_submodule(builds: list[int]) -> None:
    def change(model: Transformer) -> None:
        torch.manual_seed(9)
        model.blocks[1].attn.out = nn.Linear(9, WIDTH)

    _changed(_model(), change, builds)


def test_replaced_parameter(builds: list[int]) -> None:
    def change(model: Transformer) -> None:
        model.norm.bias = nn.Parameter(model.norm.bias.detach() + 1.0)

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
            assert max_abs_error(y, _reference_step(reference, x, state)[0]) <= TOL
        assert max_abs_error(model(x, state)[0], own) <= TOL
    assert (y - own).abs().max() > 1e-3
    assert len(builds) == 3  # own, other (reused once), own again


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
        reference, _ = _reference_step(model, x, state)
    assert model._step_cache.value is not None  # the old entry, never returned for this model
    assert max_abs_error(y, reference) == 0.0
