"""models/_functorch.py (the private torch.func queries) and the parameter walk of the fused step's
cache, ``models.fused_step.step_leaves``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from models import MODELS, make_model
from models._functorch import is_grad_tracked, transforms_active, unwrapped
from models.fused_step import step_leaves


def test_transforms_active_only_inside_a_transform() -> None:
    seen: list[bool] = []

    def f(x: Tensor) -> Tensor:
        seen.append(transforms_active())
        return x.sum()

    f(torch.ones(2))
    vmap(f)(torch.ones(3, 2))
    grad(f)(torch.ones(2))
    assert seen == [False, True, True]
    assert not transforms_active()


def test_is_grad_tracked_inside_grad_only() -> None:
    """As MAML's vectorised path sees its weights: tracked in the support pass (under grad), not
    in the query pass with the fast weights (under vmap only), nor outside any transform."""
    tracked: list[bool] = []

    def f(w: Tensor) -> Tensor:
        tracked.append(is_grad_tracked(w))
        return (w * w).sum()

    f(torch.ones(2))
    vmap(grad(f))(torch.ones(3, 2))
    vmap(f)(torch.ones(3, 2))
    assert tracked == [False, True, False]


def test_unwrapped_reaches_every_tasks_values_through_grad_and_vmap() -> None:
    values = torch.arange(6.0).reshape(3, 2)
    seen: list[Tensor] = []

    def f(w: Tensor, x: Tensor) -> Tensor:
        seen.append(unwrapped(x))
        return (w * x).sum()

    vmap(grad(f), in_dims=(None, 0))(torch.ones(2), values)
    assert type(seen[0]) is Tensor and torch.equal(seen[0], values)
    plain = torch.ones(2)
    assert unwrapped(plain) is plain


@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_leaves_are_every_parameter_of_the_model(name: str) -> None:
    model = make_model(name, 3, 2, hidden_dim=8)
    leaves = [p for p in step_leaves(model) if p is not None]  # None: an unset bias
    assert len(leaves) == len(list(model.parameters()))
    assert {id(p) for p in leaves} == {id(p) for p in model.parameters()}


def test_step_leaves_see_a_replaced_submodule_and_an_unset_parameter() -> None:
    model = make_model("transformer", 3, 2, hidden_dim=8, num_heads=2, window=4)
    model.blocks[1].attn.out = nn.Linear(8, 8)
    model.head.bias = None
    leaves = step_leaves(model)
    assert any(p is model.blocks[1].attn.out.weight for p in leaves)
    assert sum(p is None for p in leaves) == 1  # the head's bias, kept as a leaf: the cache then refuses
