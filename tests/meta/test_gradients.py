"""The meta-gradient is right: against central finite differences and against ``higher``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import higher
import pytest
import torch

from meta import MetaMAML, TaskBatch, mse
from models import make_model


@pytest.fixture
def float64() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _sequence_tasks(n: int, dim_in: int, dim_out: int) -> TaskBatch:
    return TaskBatch(
        torch.randn(n, 2, 5, dim_in),
        torch.randn(n, 2, 5, dim_out),
        torch.randn(n, 2, 4, dim_in),
        torch.randn(n, 2, 4, dim_out),
    )


@pytest.mark.parametrize(
    ("name", "meta_sgd", "query_from_support_state"),
    [("mlp", False, False), ("neural-state", True, True)],
)
def test_meta_gradient_matches_central_differences(
    float64: None, name: str, meta_sgd: bool, query_from_support_state: bool
) -> None:
    """Second order, 2 inner steps, float64: every meta-parameter's gradient to 1e-7."""
    model = make_model(name, 2, 2, hidden_dim=3)
    tasks = _sequence_tasks(2, 2, 2)
    maml = MetaMAML(
        model,
        inner_lr=0.3,
        num_inner_steps=2,
        meta_sgd=meta_sgd,
        query_from_support_state=query_from_support_state,
    )
    if meta_sgd:  # distinct per-element lrs, so their gradients are not all alike
        with torch.no_grad():
            for lr in maml.inner_lrs.values():
                lr.uniform_(0.1, 0.4)
    maml.meta_loss(tasks).backward()
    # values for the differences from the (equal, cheaper per call) per-task loop, same lrs
    reference = MetaMAML(
        model, inner_lr=0.3, num_inner_steps=2, query_from_support_state=query_from_support_state, vectorize=False
    )
    reference.inner_lrs, reference.config = maml.inner_lrs, dataclasses.replace(maml.config, vectorize=False)
    eps = 1e-6
    for p in maml.parameters():
        assert p.grad is not None
        numeric = torch.zeros_like(p)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            plus = reference.meta_loss(tasks).item()
            flat[i] = old - eps
            minus = reference.meta_loss(tasks).item()
            flat[i] = old
            numeric.view(-1)[i] = (plus - minus) / (2 * eps)
        torch.testing.assert_close(p.grad, numeric, atol=1e-7, rtol=1e-6)


def _higher_meta_grads(
    model: torch.nn.Module, tasks: TaskBatch, lr: float, steps: int, first_order: bool
) -> list[torch.Tensor]:
    """An independent MAML: higher's differentiable SGD over a monkey-patched model."""
    model.zero_grad(set_to_none=True)
    inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
    total = torch.zeros(())
    for i in range(len(tasks)):
        task = tasks[i]
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                state = model.init_state(task.support_x.shape[0])
                loss = mse(fmodel(task.support_x, state)[0], task.support_y)
                if first_order:
                    diffopt.step(loss, grad_callback=lambda grads: [g.detach() for g in grads])
                else:
                    diffopt.step(loss)
            state = model.init_state(task.query_x.shape[0])
            total = total + mse(fmodel(task.query_x, state)[0], task.query_y)
    (total / len(tasks)).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["mlp", "neural-state"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("vectorize", [True, False])
def test_meta_gradient_matches_higher(name: str, first_order: bool, vectorize: bool) -> None:
    model = make_model(name, 3, 2, hidden_dim=16)
    tasks = _sequence_tasks(4, 3, 2)
    lr, steps = 0.1, 3
    expected = _higher_meta_grads(model, tasks, lr, steps, first_order)
    maml = MetaMAML(model, inner_lr=lr, num_inner_steps=steps, first_order=first_order, vectorize=vectorize)
    model.zero_grad(set_to_none=True)
    maml.meta_loss(tasks).backward()
    for (pname, p), want in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, want, atol=1e-5, rtol=0, msg=pname)
    if not first_order:  # the second-order terms are really there
        fo = MetaMAML(model, inner_lr=lr, num_inner_steps=steps, first_order=True)
        model.zero_grad(set_to_none=True)
        fo.meta_loss(tasks).backward()
        gap = max((p.grad - w).abs().max().item() for p, w in zip(model.parameters(), expected, strict=True))
        assert gap > 1e-4
