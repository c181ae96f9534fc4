"""``lstm`` and ``gru``: the hand-written cells equal the fused kernels, and vmap uses the cells.

The conformance tests (test_conformance.py) cover the shared contract; here: the cell path of
models/rnn_cells.py against nn.LSTM / nn.GRU in values, first and second-order gradients,
multi-layer, from a nonzero state; the automatic switch under torch.func.vmap (also nested
inside torch.func.grad, as MAML runs it); the config and state layout.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F
from torch.utils._pytree import tree_flatten, tree_map

import models.gru
import models.lstm
from models import make_model
from models.base import SequenceModel, State
from models.rnn_cells import gru_cells, lstm_cells
from tests.models.pytree_error import max_abs_error

IN, OUT, WIDTH, LAYERS = 5, 3, 16, 2
ATOL = 1e-5

pytestmark = pytest.mark.parametrize("name", ["lstm", "gru"])


def _model(name: str, num_layers: int = LAYERS) -> SequenceModel:
    return make_model(name, IN, OUT, hidden_dim=WIDTH, num_layers=num_layers)


def _params(model: SequenceModel) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}


def _random_state(model: SequenceModel, batch: int) -> State:
    """A nonzero state of the model's layout, so the initial state's handling is exercised."""
    return tree_map(lambda t: torch.randn_like(t) * 0.5, model.init_state(batch))


def _cells_call(model: SequenceModel, params: dict[str, Tensor], x: Tensor, state: State):
    """The model's function built from the cells and a parameter dict, never the fused kernel."""
    weights = [
        tuple(params[f"rnn.{kind}_l{k}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        for k in range(model.config.num_layers)
    ]
    if model.name == "lstm":
        out, h, c = lstm_cells(x, state[0], state[1], weights)
        new_state: State = (h, c)
    else:
        out, new_state = gru_cells(x, state, weights)
    return F.linear(out, params["head.weight"], params["head.bias"]), new_state


def _fused_call(model: SequenceModel, params: dict[str, Tensor], x: Tensor, state: State):
    return functional_call(model, params, (x, state))



@pytest.fixture
def cell_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each use of the cells by the lstm / gru models."""
    calls: list[str] = []

    def spy(module, fn_name: str) -> None:
        original = getattr(module, fn_name)

        def wrapped(*args, **kwargs):
            calls.append(fn_name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, fn_name, wrapped)

    spy(models.lstm, "lstm_cells")
    spy(models.gru, "gru_cells")
    return calls


@pytest.mark.parametrize("num_layers", [1, 3])
def test_cells_equal_fused_in_values_and_gradients(name: str, num_layers: int, cell_calls) -> None:
    model = _model(name, num_layers)
    params = _params(model)
    x = torch.randn(4, 29, IN, requires_grad=True)
    state = tree_map(lambda t: t.requires_grad_(), _random_state(model, 4))

    y_fused, s_fused = _fused_call(model, params, x, state)
    assert cell_calls == [], "outside vmap the fused kernel must run"
    y_cells, s_cells = _cells_call(model, params, x, state)
    assert max_abs_error(y_cells, y_fused) <= ATOL
    assert max_abs_error(s_cells, s_fused) <= ATOL
    assert not torch.allclose(y_fused, torch.zeros_like(y_fused))

    # a loss on the outputs and the final state, so every path of the graph carries gradient
    inputs = [*params.values(), x, *tree_flatten(state)[0]]

    def loss(y: Tensor, s: State) -> Tensor:
        return y.pow(2).mean() + sum(t.sin().sum() for t in tree_flatten(s)[0])

    g_fused = torch.autograd.grad(loss(y_fused, s_fused), inputs)
    g_cells = torch.autograd.grad(loss(y_cells, s_cells), inputs)
    for g in g_fused:
        assert g.abs().sum() > 0
    assert max_abs_error(g_cells, g_fused) <= ATOL


def test_one_step_runs_the_cells_and_equals_the_fused_kernel(name: str, cell_calls) -> None:
    model = _model(name)
    params = _params(model)
    x = torch.randn(4, IN, requires_grad=True)
    state = _random_state(model, 4)
    y_step, s_step = _fused_call(model, params, x, state)  # (B, in): one step
    assert cell_calls, "a single step must run the cells"
    y_seq, s_seq = _fused_call(model, params, x[:, None], state)  # length-1 sequence: fused
    assert len(cell_calls) == 1
    assert max_abs_error(y_step, y_seq[:, 0]) <= ATOL
    assert max_abs_error(s_step, s_seq) <= ATOL
    inputs = [*params.values(), x]
    g_step = torch.autograd.grad(y_step.pow(2).sum(), inputs)
    g_seq = torch.autograd.grad(y_seq.pow(2).sum(), inputs)
    assert max_abs_error(g_step, g_seq) <= ATOL


def test_vmap_uses_cells_and_equals_a_loop_over_tasks(name: str, cell_calls) -> None:
    model = _model(name)
    base = {k: v.detach() for k, v in model.named_parameters()}
    tasks = 4
    stacked = {k: v + 0.05 * torch.randn(tasks, *v.shape) for k, v in base.items()}
    xs = torch.randn(tasks, 3, 11, IN)
    states = tree_map(lambda t: torch.stack([t * (i + 1) for i in range(tasks)]), _random_state(model, 3))

    y_v, s_v = vmap(lambda p, x, s: _fused_call(model, p, x, s))(stacked, xs, states)
    assert cell_calls, "under vmap the model must switch to the cells"
    calls_under_vmap = len(cell_calls)
    for i in range(tasks):
        pick = lambda t, i=i: t[i]  # noqa: E731
        y_i, s_i = _fused_call(model, tree_map(pick, stacked), xs[i], tree_map(pick, states))
        assert max_abs_error(y_v[i], y_i) <= ATOL
        assert max_abs_error(tree_map(pick, s_v), s_i) <= ATOL
    assert len(cell_calls) == calls_under_vmap, "the per-task loop must run the fused kernel"


def test_vmap_over_data_only_also_switches(name: str, cell_calls) -> None:
    """Shared weights, batched inputs: the input alone is enough to need the cells."""
    model = _model(name, num_layers=1)
    xs = torch.randn(3, 2, 7, IN)
    state = model.init_state(2)
    y_v = vmap(lambda x: model(x, state)[0])(xs)
    assert cell_calls
    for i in range(3):
        assert max_abs_error(y_v[i], model(xs[i], state)[0]) <= ATOL


def _maml_objective(call, model: SequenceModel, params: dict[str, Tensor], batch) -> Tensor:
    """One second-order MAML step: query loss at theta - alpha * grad L_support(theta)."""
    sx, sy, qx, qy, state = batch

    def support_loss(p: dict[str, Tensor]) -> Tensor:
        return (call(model, p, sx, state)[0] - sy).pow(2).mean()

    grads = torch.autograd.grad(support_loss(params), list(params.values()), create_graph=True)
    fast = {k: v - 0.5 * g for (k, v), g in zip(params.items(), grads, strict=True)}
    return (call(model, fast, qx, state)[0] - qy).pow(2).mean()


def _task(model: SequenceModel, batch: int = 3, steps: int = 13):
    return (
        torch.randn(batch, steps, IN),
        torch.randn(batch, steps, OUT),
        torch.randn(batch, steps, IN),
        torch.randn(batch, steps, OUT),
        _random_state(model, batch),
    )


def test_second_order_gradients_match_between_paths(name: str) -> None:
    model = _model(name)
    params = _params(model)
    batch = _task(model)

    meta_fused = torch.autograd.grad(_maml_objective(_fused_call, model, params, batch), list(params.values()))
    meta_cells = torch.autograd.grad(_maml_objective(_cells_call, model, params, batch), list(params.values()))
    assert max_abs_error(meta_cells, meta_fused) <= ATOL

    # the second-order term is really there: first-order MAML differs from it
    sx, sy, qx, qy, state = batch
    loss = (_fused_call(model, params, sx, state)[0] - sy).pow(2).mean()
    grads = torch.autograd.grad(loss, list(params.values()))
    fast = {k: v - 0.5 * g for (k, v), g in zip(params.items(), grads, strict=True)}
    first_order = torch.autograd.grad((_fused_call(model, fast, qx, state)[0] - qy).pow(2).mean(), list(fast.values()))
    gap = max((a - b).abs().max().item() for a, b in zip(meta_fused, first_order, strict=True))
    assert gap > 1e-3, gap


def test_vmapped_maml_gradient_equals_per_task_loop(name: str, cell_calls) -> None:
    """MAML's fast path: torch.func.grad inside vmap (cells) against autograd per task (fused)."""
    model = _model(name)
    params = _params(model)
    tasks = [_task(model) for _ in range(3)]

    loop = sum(_maml_objective(_fused_call, model, params, t) for t in tasks) / len(tasks)
    assert cell_calls == []
    meta_loop = torch.autograd.grad(loop, list(params.values()))

    def task_loss(p: dict[str, Tensor], sx, sy, qx, qy, state) -> Tensor:
        inner = grad(lambda w: (_fused_call(model, w, sx, state)[0] - sy).pow(2).mean())(p)
        fast = {k: v - 0.5 * inner[k] for k, v in p.items()}
        return (_fused_call(model, fast, qx, state)[0] - qy).pow(2).mean()

    stacked = [torch.stack(parts) for parts in zip(*[t[:4] for t in tasks], strict=True)]
    states = tree_map(lambda *s: torch.stack(s), *[t[4] for t in tasks])
    per_task = vmap(task_loss, in_dims=(None, 0, 0, 0, 0, 0))(params, *stacked, states)
    assert cell_calls, "vmap(grad(model)) must reach the cells through the grad wrapper"
    assert max_abs_error(per_task.mean(), loop) <= ATOL
    meta_vmap = torch.autograd.grad(per_task.mean(), list(params.values()))
    assert max_abs_error(meta_vmap, meta_loop) <= ATOL


def test_state_layout_is_batch_then_layers(name: str) -> None:
    model = _model(name, num_layers=3)
    state = model.init_state(5)
    leaves = tree_flatten(state)[0]
    assert len(leaves) == (2 if name == "lstm" else 1)
    for leaf in leaves:
        assert leaf.shape == (5, 3, WIDTH)
    _, after = model(torch.randn(5, 4, IN), state)
    for leaf in tree_flatten(after)[0]:
        assert leaf.shape == (5, 3, WIDTH)


def test_layer_count_is_checked(name: str) -> None:
    assert sum(p.numel() for p in _model(name, 3).parameters()) > sum(p.numel() for p in _model(name, 1).parameters())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"num_layers: expected a positive int, got {bad!r}"):
            make_model(name, IN, OUT, hidden_dim=WIDTH, num_layers=bad)
