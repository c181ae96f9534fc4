"""The contract of the stateful interface, checked for every registered model.

A model added to ``models.MODELS`` is covered here with no new test (docs/architecture.md, "The
model contract").
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten, tree_map

from models import MODELS, count_params, load_model, make_model
from tests.models.pytree_error import max_abs_error

IN, OUT, WIDTH = 5, 3, 16
ATOL = 1e-5

pytestmark = pytest.mark.parametrize("name", sorted(MODELS))


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return make_model(name, IN, OUT, hidden_dim=WIDTH).eval()



def test_sequence_equals_steps_and_chunks(name: str) -> None:
    model = _model(name)
    x = torch.randn(3, 23, IN)
    state0 = model.init_state(3)
    y_seq, s_seq = model(x, state0)
    assert y_seq.shape == (3, 23, OUT)

    state, ys = state0, []
    for t in range(x.shape[1]):
        y_t, state = model(x[:, t], state)
        assert y_t.shape == (3, OUT)
        ys.append(y_t)
    assert max_abs_error(torch.stack(ys, 1), y_seq) <= ATOL
    assert max_abs_error(state, s_seq) <= ATOL

    for cuts in ([0, 7, 8, 23], [0, 1, 12, 22, 23]):
        state, ys = state0, []
        for a, b in itertools.pairwise(cuts):
            y_c, state = model(x[:, a:b], state)
            ys.append(y_c)
        assert max_abs_error(torch.cat(ys, 1), y_seq) <= ATOL
        assert max_abs_error(state, s_seq) <= ATOL


def test_continues_from_a_nonzero_state(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 30, IN)
    _, mid = model(torch.randn(2, 9, IN), model.init_state(2))
    y_seq, s_seq = model(x, mid)
    state, ys = mid, []
    for t in range(30):
        y_t, state = model(x[:, t], state)
        ys.append(y_t)
    assert max_abs_error(torch.stack(ys, 1), y_seq) <= ATOL
    assert max_abs_error(state, s_seq) <= ATOL


def test_reset_equals_separate_runs(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 20, IN)
    reset = torch.zeros(2, 20, dtype=torch.bool)
    reset[0, 6] = True
    reset[1, 13] = True
    reset[1, 0] = True
    _, warm = model(torch.randn(2, 5, IN), model.init_state(2))
    y, s = model(x, warm, reset=reset)

    fresh = model.init_state(1)
    y0a, s0 = model(x[:1, :6], tree_map(lambda t: t[:1], warm))
    y0b, s0 = model(x[:1, 6:], fresh)
    y1a, _ = model(x[1:, :13], fresh)
    y1b, s1 = model(x[1:, 13:], fresh)
    assert max_abs_error(y[:1], torch.cat([y0a, y0b], 1)) <= ATOL
    assert max_abs_error(y[1:], torch.cat([y1a, y1b], 1)) <= ATOL
    assert max_abs_error(s, tree_map(lambda a, b: torch.cat([a, b]), s0, s1)) <= ATOL

    # one-step mode with a (B,) reset equals starting that row fresh
    y_step, _ = model(x[:, 0], warm, reset=torch.tensor([True, False]))
    y_fresh, _ = model(x[:1, 0], fresh)
    assert max_abs_error(y_step[:1], y_fresh) <= ATOL


def test_state_is_batch_first_and_rows_independent(name: str) -> None:
    model = _model(name)
    state = model.init_state(4)
    for leaf in tree_flatten(state)[0]:
        assert leaf.shape[0] == 4
    x = torch.randn(4, 12, IN)
    y, s = model(x, state)
    x2 = x.clone()
    x2[2] = torch.randn(12, IN) * 3
    y2, s2 = model(x2, state)
    keep = [0, 1, 3]
    assert max_abs_error(y[keep], y2[keep]) <= ATOL
    assert max_abs_error(tree_map(lambda t: t[keep], s), tree_map(lambda t: t[keep], s2)) <= ATOL
    assert not torch.allclose(y[2], y2[2])


def test_deterministic_under_seed(name: str) -> None:
    x = torch.randn(2, 8, IN)
    a, b = _model(name, seed=3), _model(name, seed=3)
    assert max_abs_error(a(x, a.init_state(2))[0], b(x, b.init_state(2))[0]) <= 0
    c = _model(name, seed=4)
    assert not torch.allclose(a(x, a.init_state(2))[0], c(x, c.init_state(2))[0])


def test_gradients_reach_every_parameter(name: str) -> None:
    model = _model(name).train()
    x = torch.randn(3, 10, IN)
    y, _ = model(x, model.init_state(3))
    y.pow(2).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


def test_functional_call_and_vmap_equal_plain_call(name: str) -> None:
    model = _model(name)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.randn(2, 9, IN)
    state = model.init_state(2)
    y, s = model(x, state)
    y_f, s_f = functional_call(model, params, (x, state))
    assert max_abs_error(y_f, y) <= ATOL
    assert max_abs_error(s_f, s) <= ATOL

    # vmap over a leading task dimension: different weights and inputs per task
    tasks = 3
    stacked = {k: torch.stack([v + 0.01 * i for i in range(tasks)]) for k, v in params.items()}
    xs = torch.randn(tasks, 2, 9, IN)
    states = tree_map(lambda t: t.unsqueeze(0).expand(tasks, *t.shape).clone(), state)

    def run(p, xb, sb):
        return functional_call(model, p, (xb, sb))

    y_v, s_v = vmap(run)(stacked, xs, states)
    for i in range(tasks):
        p_i = {k: v[i] for k, v in stacked.items()}
        y_i, s_i = functional_call(model, p_i, (xs[i], state))
        assert max_abs_error(y_v[i], y_i) <= ATOL
        assert max_abs_error(tree_map(lambda t, i=i: t[i], s_v), s_i) <= ATOL


def test_float64_model_gets_a_float64_state(name: str) -> None:
    model = _model(name).double()
    state = model.init_state(2)
    for leaf in tree_flatten(state)[0]:
        if leaf.is_floating_point() or leaf.is_complex():
            assert leaf.dtype in (torch.float64, torch.complex128), leaf.dtype
    y, _ = model(torch.randn(2, 5, IN, dtype=torch.float64), state)
    assert y.dtype == torch.float64


def test_save_load_round_trip(name: str, tmp_path) -> None:
    model = _model(name)
    path = tmp_path / "model.pt"
    model.save(str(path))
    loaded = load_model(str(path))
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    x = torch.randn(2, 6, IN)
    assert max_abs_error(loaded.eval()(x, loaded.init_state(2))[0], model(x, model.init_state(2))[0]) <= 0


@pytest.mark.parametrize("budget", [10_000, 50_000, 1_000_000])
def test_param_budget_within_ten_percent(name: str, budget: int) -> None:
    model = make_model(name, 23, 17, param_budget=budget)
    assert abs(count_params(model) - budget) <= 0.1 * budget, count_params(model)


def test_bad_inputs_name_expected_and_given(name: str) -> None:
    model = _model(name)
    state = model.init_state(2)
    with pytest.raises(ValueError, match=rf"{IN} input features.*got {IN + 1}"):
        model(torch.randn(2, 4, IN + 1), state)
    with pytest.raises(ValueError, match="expected shape"):
        model(torch.randn(2, 4, 1, IN), state)
    with pytest.raises(ValueError, match=r"reset expected shape \(2, 4\).*got \(2, 3\)"):
        model(torch.randn(2, 4, IN), state, reset=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown config key"):
        make_model(name, IN, OUT, no_such_field=1)
    if not model.stateless:
        with pytest.raises(ValueError, match=r"state expected batch size 3.*got batch sizes \[2\]"):
            model(torch.randn(3, 4, IN), state)


def test_unknown_model_name_lists_known(name: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown name 'nope'.*{name}"):
        make_model("nope", IN, OUT)
