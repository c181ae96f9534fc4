"""The vmapped path and the per-task reference loop give the same meta-gradient, every model."""

from __future__ import annotations

import pytest
import torch

from meta import MetaMAML, TaskBatch
from models import MODELS, make_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("first_order", "query_from_support_state"), [(False, False), (False, True), (True, True)])
def test_vmap_meta_gradient_equals_loop(name: str, first_order: bool, query_from_support_state: bool) -> None:
    """Sequence data with state; second order 2 inner steps; Meta-SGD lrs included."""
    model = make_model(name, 3, 2, hidden_dim=16)
    tasks = TaskBatch(
        torch.randn(4, 3, 6, 3), torch.randn(4, 3, 6, 2),
        torch.randn(4, 3, 5, 3), torch.randn(4, 3, 5, 2),
    )  # fmt: skip
    grads, losses = [], []
    for vectorize in (True, False):
        maml = MetaMAML(
            model,
            inner_lr=0.1,
            num_inner_steps=2,
            first_order=first_order,
            meta_sgd=True,
            query_from_support_state=query_from_support_state,
            vectorize=vectorize,
        )
        with torch.no_grad():  # same non-uniform lrs on both paths
            gen = torch.Generator().manual_seed(1)
            for lr in maml.inner_lrs.values():
                lr.copy_(torch.rand(lr.shape, generator=gen) * 0.2)
        model.zero_grad(set_to_none=True)
        loss = maml.meta_loss(tasks)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in maml.parameters()])
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=0)
    names = [n for n, _ in model.named_parameters()] + [f"lr:{n}" for n in maml.inner_lrs]
    for pname, a, b in zip(names, grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"{name} {pname}")
