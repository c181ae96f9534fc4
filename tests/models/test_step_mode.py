"""Step mode (one (B, in) step per call) of the recurrent and feed-forward zoo models.

Step mode has its own fast paths (models/ssm.py ``step``, the RNN cells, the MLPs called without
nn.Module's machinery, ``gelu_native``), and MAML and the Adapter differentiate and vmap through
it, so these tests hold it equal to sequence mode of length one in values, first- and
second-order gradients, under ``vmap`` + ``functional_call`` and in float64. The transformer's
step mode is tested in tests/models/test_transformer.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten, tree_map

from models import make_model
from models import registry as registry_module
from models import ssm as ssm_module
from models.layers import gelu_native
from models.registry import _bisect_width, size_for_budget
from tests.models.pytree_error import max_abs_error

IN, OUT, WIDTH = 4, 3, 10
STEP_MODELS = ["gru", "lstm", "mlp", "neural-state", "ssm"]


def _model(name: str, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    return make_model(name, IN, OUT, hidden_dim=WIDTH).to(dtype).eval()


def _random_state(model, batch: int, dtype: torch.dtype = torch.float32):
    """A non-zero state, so the recurrence's state path matters."""
    return tree_map(lambda t: torch.randn(t.shape, dtype=dtype), model.init_state(batch))



@pytest.mark.parametrize("name", STEP_MODELS)
@pytest.mark.parametrize("batch", [1, 3])
def test_step_gradients_equal_one_step_sequence_to_second_order(name: str, batch: int) -> None:
    """d loss / d params and a Hessian-vector product, step mode vs a length-1 sequence (float64)."""
    model = _model(name, torch.float64)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    x = torch.randn(batch, IN, dtype=torch.float64)
    state = _random_state(model, batch, torch.float64)
    directions = {k: torch.randn_like(v) for k, v in params.items()}

    def grads_and_hvp(one_step: bool):
        inputs = x if one_step else x.unsqueeze(1)
        y, new_state = functional_call(model, params, (inputs, state))
        loss = y.pow(2).sum() + sum(leaf.pow(2).sum() for leaf in tree_flatten(new_state)[0])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        dot = sum((g * directions[k]).sum() for k, g in zip(params, grads, strict=True))
        hvp = torch.autograd.grad(dot, list(params.values()), allow_unused=True)
        hvp_dense = [torch.zeros_like(p) if h is None else h for p, h in zip(params.values(), hvp, strict=True)]
        return [g.detach() for g in grads], hvp_dense

    g_step, h_step = grads_and_hvp(True)
    g_seq, h_seq = grads_and_hvp(False)
    assert max_abs_error(g_step, g_seq) <= 1e-10
    assert max_abs_error(h_step, h_seq) <= 1e-10
    assert any(h.abs().sum() > 0 for h in h_step), "the Hessian-vector product is zero: nothing was tested"


@pytest.mark.parametrize("name", STEP_MODELS)
@pytest.mark.parametrize("batch", [1, 2])
def test_vmapped_functional_step_equals_per_task_steps(name: str, batch: int) -> None:
    """MAML's batched path through step mode: vmap over tasks of functional_call on one step."""
    model = _model(name)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tasks = 3
    stacked = {k: torch.stack([v + 0.05 * i for i in range(tasks)]) for k, v in params.items()}
    xs = torch.randn(tasks, batch, IN)
    states = tree_map(lambda t: torch.randn(tasks, *t.shape), model.init_state(batch))

    def run(p, xb, sb):
        return functional_call(model, p, (xb, sb))

    y_v, s_v = vmap(run)(stacked, xs, states)
    for i in range(tasks):
        p_i = {k: v[i] for k, v in stacked.items()}
        y_i, s_i = functional_call(model, p_i, (xs[i], tree_map(lambda t, i=i: t[i], states)))
        assert max_abs_error(y_v[i], y_i) <= 1e-5
        assert max_abs_error(tree_map(lambda t, i=i: t[i], s_v), s_i) <= 1e-5


@pytest.mark.parametrize("name", STEP_MODELS)
@pytest.mark.parametrize("batch", [1, 2, 48])
def test_steps_equal_sequence_at_mpc_batch_sizes(name: str, batch: int) -> None:
    """Step mode (batch 1 and the planner's 48 candidates take different GELU paths) vs sequence."""
    model = _model(name)
    x = torch.randn(batch, 6, IN)
    state0 = _random_state(model, batch)
    with torch.no_grad():
        y_seq, s_seq = model(x, state0)
        state, ys = state0, []
        for t in range(x.shape[1]):
            y_t, state = model(x[:, t], state)
            ys.append(y_t)
    assert max_abs_error(torch.stack(ys, 1), y_seq) <= 1e-5
    assert max_abs_error(state, s_seq) <= 1e-5


@pytest.mark.parametrize("name", STEP_MODELS)
def test_float64_step_stays_float64_and_equals_sequence(name: str) -> None:
    model = _model(name, torch.float64)
    x = torch.randn(2, IN, dtype=torch.float64)
    state = _random_state(model, 2, torch.float64)
    y, new_state = model(x, state)
    assert y.dtype == torch.float64
    assert all(leaf.dtype == torch.float64 for leaf in tree_flatten(new_state)[0])
    y_seq, s_seq = model(x.unsqueeze(1), state)
    assert max_abs_error(y, y_seq[:, 0]) <= 1e-12
    assert max_abs_error(new_state, s_seq) <= 1e-12


def test_step_state_checks_name_the_batch_sizes() -> None:
    """The tuple fast path of the state check reports the same error as the pytree path."""
    model = _model("ssm")
    state = model.init_state(2)
    bad = (state[0], torch.zeros(3, *state[1].shape[1:]))
    with pytest.raises(ValueError, match=r"state expected batch size 2.*got batch sizes \[2, 3\]"):
        model(torch.randn(2, IN), bad)
    with pytest.raises(ValueError, match=r"state expected batch size 2.*got batch sizes \[-1, 2\]"):
        model(torch.randn(2, IN), (state[0], torch.zeros(())))
    with pytest.raises(ValueError, match=r"state expected batch size 2.*got batch sizes \[\]"):
        model(torch.randn(2, IN), ())
    # A list state takes the pytree path and is accepted like the tuple.
    assert max_abs_error(model(torch.randn(2, IN), list(state))[1], model(torch.randn(2, IN), state)[1]) <= 10.0
    mlp = _model("mlp")
    with pytest.raises(ValueError, match=r"stateless model expected state \(\)"):
        mlp(torch.randn(2, IN), (torch.zeros(2),))


@pytest.mark.parametrize("shape", [(1, 7), (5, 7), (48, 44), (7,), (2, 3, 7), (1, 1), (6, 1), (300, 64)])
def test_gelu_native_equals_gelu_in_values_and_gradients(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y, y_ref = gelu_native(x), F.gelu(x)
    assert y.shape == y_ref.shape and y.is_contiguous()
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    g = torch.autograd.grad(y.sum(), x, create_graph=True)[0]
    g_ref = torch.autograd.grad(y_ref.sum(), x, create_graph=True)[0]
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)
    gg = torch.autograd.grad(g.sum(), x)[0]
    gg_ref = torch.autograd.grad(g_ref.sum(), x)[0]
    torch.testing.assert_close(gg, gg_ref, atol=1e-12, rtol=0)
    # float32 takes oneDNN in F.gelu and the native kernel here: equal to rounding.
    x32 = torch.randn(shape)
    torch.testing.assert_close(gelu_native(x32), F.gelu(x32), atol=1e-6, rtol=0)


def test_ssm_step_after_inference_mode_still_differentiates(monkeypatch) -> None:
    """The SSM's cached constants, first made under inference mode, must not be inference
    tensors (those cannot be saved for backward)."""
    monkeypatch.setattr(ssm_module, "_CONSTANTS", {})  # as if no SSM had run in this process yet
    model = _model("ssm")
    x = torch.randn(2, IN)
    with torch.inference_mode():
        model(x, model.init_state(2))
    assert ssm_module._CONSTANTS, "the constant was not cached: nothing was tested"
    y, _ = model(x, model.init_state(2))
    y.sum().backward()
    assert model.blocks[0].recurrence.C.grad is not None


@pytest.mark.parametrize("name", [*STEP_MODELS, "transformer"])
@pytest.mark.parametrize("budget", [3_000, 20_000])
def test_cached_size_equals_the_bisection(name: str, budget: int, monkeypatch) -> None:
    """The memoised size is the bisection's, and asking again builds no model."""
    expected = _bisect_width.__wrapped__(registry_module.get_model_class(name), name, 4, 3, budget, ())
    assert size_for_budget(name, 4, 3, budget) == expected
    builds = []
    real = registry_module._meta_param_count
    monkeypatch.setattr(registry_module, "_meta_param_count", lambda build: builds.append(1) or real(build))
    assert size_for_budget(name, 4, 3, budget) == expected
    assert builds == []
    # Other arguments are a different key, sized afresh (and so it builds models).
    size_for_budget(name, 5, 3, budget)
    assert builds


def test_unhashable_config_is_sized_without_the_memo() -> None:
    """A config value that cannot be hashed still gets sized (here it fails in the config, as
    it would without the memo: the error names the field)."""
    with pytest.raises((ValueError, TypeError)):
        size_for_budget("ssm", 4, 3, 20_000, state_dim=[32])
