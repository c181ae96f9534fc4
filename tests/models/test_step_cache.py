"""The cached fused step weights (``models.fused_step.WeightCache``) of every model that has them:
formed once while the parameters stay the same, never used under autograd or vmap, and never
stale after any way the parameters can change.

Each invalidation test runs a step (which caches the weights), changes the parameters one way,
and checks the next step against the uncached differentiable step of the model as it is now, that
the weights were formed again, and that the change moved the output (so a stale cache would fail).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._pytree import tree_map

from models.base import SequenceModel
from tests.models.pytree_error import max_abs_error
from tests.models.step_cache_cases import CASES, IN, TOL, CachedStepCase, count_builds, step


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> CachedStepCase:
    return request.param


@pytest.fixture
def builds(case: CachedStepCase, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the times the case's fused weights are formed."""
    return count_builds(case.cls, monkeypatch)


def _with(model: SequenceModel, params: dict[str, Tensor]) -> SequenceModel:
    """A copy of ``model`` holding ``params``."""
    other = copy.deepcopy(model)
    other.load_state_dict(params)
    return other


# ---- when the cache is used ------------------------------------------------------------------


def test_weights_are_formed_once_while_the_parameters_stay(case: CachedStepCase, builds: list[int]) -> None:
    model = case.model()
    x, state = case.inputs(model)
    first = step(model, x, state)
    for _ in range(5):
        assert torch.equal(step(model, x, state), first)
    assert builds == [1]


def test_with_autograd_on_the_step_differentiates_and_caches_nothing(
    case: CachedStepCase, builds: list[int]
) -> None:
    model = case.model()
    x, state = case.inputs(model)
    step(model, x, state)  # cached
    y, _ = model(x, state)
    assert y.requires_grad
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert max_abs_error(y, model(x, state)[0]) <= TOL
    assert builds == [1]


def test_under_vmap_the_cache_is_not_used(case: CachedStepCase, builds: list[int]) -> None:
    """Per-task weights under vmap (the policy sampler's rollouts) take the differentiable step."""
    model = case.model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, v * 1.1, v * 0.9]) for k, v in params.items()}
    xs = torch.randn(3, 2, IN)
    _, state = case.inputs(model, 2)
    states = tree_map(lambda s: s.expand(3, *s.shape).clone(), state)
    with torch.no_grad():
        y, _ = torch.func.vmap(lambda p, x, s: functional_call(model, p, (x, s)))(stacked, xs, states)
        for i in range(3):
            task_model = _with(model, {k: v[i] for k, v in stacked.items()})
            y_i, _ = case.reference(task_model, xs[i], state)
            assert max_abs_error(y[i], y_i) <= TOL
    assert builds == []


def test_inference_mode_steps_then_no_grad_steps_agree(case: CachedStepCase) -> None:
    model = case.model()
    x, state = case.inputs(model)
    with torch.inference_mode():
        y_inf, _ = model(x, state)
    assert case.fresh_error(model, x, state) <= TOL
    with torch.no_grad():
        assert max_abs_error(model(x, state)[0], y_inf) == 0.0
    y, _ = model(x, state)  # and autograd still works afterwards
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# ---- invalidation: every way the parameters change ---------------------------------------------


def _optimizer_step(case: CachedStepCase, model: SequenceModel) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, state = case.inputs(model, seed=3)
    model(x, state)[0].square().sum().backward()
    opt.step()


def _load_state_dict(assign: bool) -> Callable[[CachedStepCase, SequenceModel], None]:
    def change(case: CachedStepCase, model: SequenceModel) -> None:
        model.load_state_dict(case.model(seed=5).state_dict(), assign=assign)

    return change


def _dtype_round_trip(swap: bool) -> Callable[[CachedStepCase, SequenceModel], None]:
    """.double() then .float() puts new memory under the same Parameter objects, versions unchanged
    (or, with the swap flag, swaps the tensors: the cache must hold no reference that blocks it)."""

    def change(case: CachedStepCase, model: SequenceModel) -> None:
        previous = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(swap)
        try:
            model.double()
            with torch.no_grad():
                model.head.bias.add_(1.0)
            model.float()
        finally:
            torch.__future__.set_swap_module_params_on_conversion(previous)

    return change


def _assign_data(case: CachedStepCase, model: SequenceModel) -> None:
    p = case.data_leaf(model)
    p.data = p.data * 3.0


def _swap_tensors(case: CachedStepCase, model: SequenceModel) -> None:
    p = model.encoder.weight
    torch.utils.swap_tensors(p, nn.Parameter(p.detach() * -2.0))  # scaled: a LayerNorm would hide a shift


CHANGES: dict[str, Callable[[CachedStepCase, SequenceModel], None]] = {
    "in_place_under_no_grad": lambda case, model: case.scale_in_place(model),
    "in_place_of_a_view": lambda case, model: case.change_view(model),
    "optimizer_step": _optimizer_step,
    "load_state_dict": _load_state_dict(assign=False),
    "load_state_dict_assign": _load_state_dict(assign=True),
    "dtype_round_trip": _dtype_round_trip(swap=False),
    "dtype_round_trip_swapping": _dtype_round_trip(swap=True),
    "data_assignment": _assign_data,
    "swap_tensors": _swap_tensors,
    "replaced_submodule": lambda case, model: case.replace_submodule(model),
    "replaced_parameter": lambda case, model: case.replace_parameter(model),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_of_the_parameters_forms_the_weights_again(
    case: CachedStepCase, change: str, builds: list[int]
) -> None:
    model = case.model()
    x, state = case.inputs(model)
    before = step(model, x, state)
    assert builds == [1]
    CHANGES[change](case, model)
    assert case.fresh_error(model, x, state) <= TOL
    assert len(builds) == 2, "the change did not invalidate the cached weights"
    assert (step(model, x, state) - before).abs().max() > 1e-3, "the change did not move the output"


def test_dtype_change_gives_weights_in_the_new_dtype(case: CachedStepCase, builds: list[int]) -> None:
    model = case.model()
    x, state = case.inputs(model)
    step(model, x, state)
    model.double()
    x64, s64 = x.double(), tree_map(lambda s: s.double() if s.is_floating_point() else s, state)
    assert case.fresh_error(model, x64, s64) <= 1e-12
    assert step(model, x64, s64).dtype == torch.float64
    assert len(builds) == 2


def test_functional_call_runs_with_the_given_weights_and_then_the_own_again(
    case: CachedStepCase, builds: list[int]
) -> None:
    """functional_call swaps the parameters in and back: neither side may see the other's weights."""
    model = case.model()
    x, state = case.inputs(model)
    own = step(model, x, state)
    other = {k: v.detach() * 1.2 for k, v in model.named_parameters()}
    reference = _with(model, other)
    with torch.no_grad():
        for _ in range(2):  # the second call reuses the weights formed from ``other``
            y, _ = functional_call(model, other, (x, state))
            assert max_abs_error(y, case.reference(reference, x, state)[0]) <= TOL
        assert max_abs_error(model(x, state)[0], own) <= TOL
    assert (y - own).abs().max() > 1e-3
    assert len(builds) == 3  # own, other (reused once), own again


def test_functional_call_with_weights_changed_in_place_between_calls(case: CachedStepCase) -> None:
    model = case.model()
    x, state = case.inputs(model)
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        before, _ = functional_call(model, weights, (x, state))
        weights["head.weight"].mul_(-1.0)
        after, _ = functional_call(model, weights, (x, state))
        reference = case.reference(_with(model, weights), x, state)[0]
    assert max_abs_error(after, reference) <= TOL
    assert (after - before).abs().max() > 1e-3


def test_deepcopy_and_pickle_start_with_an_empty_cache(case: CachedStepCase) -> None:
    model = case.model()
    x, state = case.inputs(model)
    own = step(model, x, state)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin._step_cache.value is None
        case.scale_in_place(twin)
        assert case.fresh_error(twin, x, state) <= TOL
        assert (step(twin, x, state) - own).abs().max() > 1e-3
    assert max_abs_error(step(model, x, state), own) == 0.0  # the original keeps its own weights


def test_a_leaf_that_is_not_a_tensor_falls_back_to_the_differentiable_step(case: CachedStepCase) -> None:
    """A bias removed (None) cannot be cached: the step runs uncached, with the model as it is."""
    model = case.model()
    x, state = case.inputs(model)
    step(model, x, state)
    model.head.bias = None
    with torch.no_grad():
        y, _ = model(x, state)
        reference, _ = case.reference(model, x, state)
    assert model._step_cache.value is not None  # the old entry, never returned for this model
    assert max_abs_error(y, reference) == 0.0
