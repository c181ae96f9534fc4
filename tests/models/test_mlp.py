"""``mlp``: the row-wise forward equals the layer stack, and so do its MAML derivatives.

models/mlp.py runs a sequence as (B * T, in) rows through one ``addmm`` per layer, and where a
``torch.func.grad`` differentiates a weight it feeds the matmul a row-major copy of ``weight.T``
(a layout choice for MaML's second order under vmap). These tests hold that path equal to the
module's own ``nn.Sequential`` in values and in first- and second-order derivatives, in float64:
plain calls, ``vmap`` of ``grad`` (where the copy is taken, unbatched and batched weights), and
the generic reset.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from meta.maml import MetaMAML
from meta.tasks import TaskBatch
from models import make_model
from models.mlp import MLP

IN, OUT, WIDTH = 5, 3, 7
TOL = {"atol": 1e-12, "rtol": 1e-10}


def _model(num_layers: int = 2) -> MLP:
    torch.manual_seed(0)
    model = make_model("mlp", IN, OUT, hidden_dim=WIDTH, num_layers=num_layers).double()
    assert isinstance(model, MLP)
    return model


def _net_params(model: MLP, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """``model``-level names ('net.0.weight') -> names inside ``model.net`` ('0.weight')."""
    return {k.removeprefix("net."): v for k, v in weights.items()}


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 4), (1, 1), (2, 9)])
def test_sequence_equals_the_layer_stack(num_layers: int, shape: tuple[int, int]) -> None:
    model = _model(num_layers)
    x = torch.randn(*shape, IN, dtype=torch.float64)
    y, state = model(x, ())
    assert state == () and y.shape == (*shape, OUT)
    torch.testing.assert_close(y, model.net(x), **TOL)
    # a non-contiguous input (every other feature of a wider tensor) gives the same rows
    x_strided = torch.stack([x, torch.randn_like(x)], dim=-1).flatten(-2)[..., ::2]
    assert not x_strided.is_contiguous()
    torch.testing.assert_close(model(x_strided, ())[0], model.net(x), **TOL)


def test_reset_changes_nothing_in_a_stateless_model() -> None:
    model = _model()
    x = torch.randn(2, 6, IN, dtype=torch.float64)
    reset = torch.zeros(2, 6, dtype=torch.bool)
    reset[0, 2] = reset[1, 4] = True
    torch.testing.assert_close(model(x, (), reset=reset)[0], model.net(x), **TOL)


def _reference_meta_grads(model: MLP, batch: TaskBatch, lr: float, steps: int) -> tuple[Tensor, list[Tensor]]:
    """Second-order MAML by plain autograd through ``model.net`` (no transform, no row path)."""
    params = dict(model.named_parameters())
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(batch)):
        task = batch[i]
        fast = params
        for _ in range(steps):
            pred = functional_call(model.net, _net_params(model, fast), (task.support_x,))
            loss = (pred - task.support_y).pow(2).mean()
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {k: w - lr * g for (k, w), g in zip(fast.items(), grads, strict=True)}
        pred = functional_call(model.net, _net_params(model, fast), (task.query_x,))
        total = total + (pred - task.query_y).pow(2).mean()
    meta_loss = total / len(batch)
    return meta_loss, list(torch.autograd.grad(meta_loss, list(params.values())))


@pytest.mark.parametrize("steps", [1, 2])
def test_vmapped_maml_meta_gradient_equals_plain_autograd_through_the_layer_stack(steps: int) -> None:
    """One inner step differentiates unbatched weights under grad, two also batched fast weights."""
    model = _model()
    gen = torch.Generator().manual_seed(1)
    batch = TaskBatch(*(torch.randn(4, 3, 5, d, generator=gen, dtype=torch.float64) for d in (IN, OUT, IN, OUT)))
    maml = MetaMAML(model, inner_lr=0.3, num_inner_steps=steps, vectorize=True)
    loss = maml.meta_loss(batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_loss, ref_grads = _reference_meta_grads(model, batch, 0.3, steps)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    for g, r in zip(grads, ref_grads, strict=True):
        assert float(r.abs().max()) > 1e-6  # every parameter gets a real meta-gradient
        torch.testing.assert_close(g, r, **TOL)


def test_grad_under_vmap_equals_per_row_autograd_gradients() -> None:
    """``vmap(grad(.))`` over inputs, weights shared: each row's gradient as autograd gives it."""
    model = _model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs = torch.randn(3, 2, 4, IN, dtype=torch.float64)

    def loss(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, p, (x, ()))[0].tanh().sum()

    batched = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(xs.shape[0]):
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        out = functional_call(model.net, _net_params(model, leaves), (xs[i],)).tanh().sum()
        expected = torch.autograd.grad(out, list(leaves.values()))
        for k, e in zip(leaves, expected, strict=True):
            torch.testing.assert_close(batched[k][i], e, **TOL)
