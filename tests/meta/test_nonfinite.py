"""Non-finite losses and gradients never reach a model's weights or its optimiser state.

The reference for a skipped task is an independent run: the same initialisation meta-updated on
the clean tasks alone must reach the same weights as the run whose batch also held the bad task.
"""

from __future__ import annotations

import copy

import pytest
import torch

from meta import MetaMAML, NonFiniteError, TaskBatch
from models import MODELS, make_model

PATHS = [  # (vectorize, first_order)
    (True, False),
    (False, False),
    (True, True),
]


def _tasks(n: int = 4, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(
        torch.randn(n, 2, 5, 3, generator=g), torch.randn(n, 2, 5, 2, generator=g),
        torch.randn(n, 2, 4, 3, generator=g), torch.randn(n, 2, 4, 2, generator=g),
    )  # fmt: skip


def _with_nan_target(batch: TaskBatch, task: int) -> TaskBatch:
    query_y = batch.query_y.clone()
    query_y[task, 0, 1, 0] = float("nan")
    return TaskBatch(batch.support_x, batch.support_y, batch.query_x, query_y)


def _maml(name: str, vectorize: bool, first_order: bool, nonfinite: str = "skip") -> MetaMAML:
    torch.manual_seed(3)
    model = make_model(name, 3, 2, hidden_dim=8)
    return MetaMAML(model, inner_lr=0.05, outer_lr=1e-2, first_order=first_order, vectorize=vectorize,
                    nonfinite=nonfinite)  # fmt: skip


def _weights(maml: MetaMAML) -> list[torch.Tensor]:
    return [p.detach().clone() for p in maml.model.parameters()]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("vectorize", "first_order"), PATHS)
def test_a_nan_task_is_skipped_and_the_step_equals_the_step_on_the_clean_tasks(
    name: str, vectorize: bool, first_order: bool
) -> None:
    clean = _tasks()
    poisoned = _with_nan_target(clean, task=2)
    maml = _maml(name, vectorize, first_order)
    loss = maml.meta_update(poisoned)
    assert maml.last_skipped == 1 and maml.skipped_tasks == 1
    assert torch.isfinite(torch.tensor(loss))
    assert all(torch.isfinite(w).all() for w in _weights(maml))
    reference = _maml(name, vectorize, first_order)
    keep = torch.tensor([0, 1, 3])
    ref_loss = reference.meta_update(TaskBatch(*(t[keep] for t in (clean.support_x, clean.support_y,
                                                                    clean.query_x, clean.query_y))))  # fmt: skip
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for got, want in zip(_weights(maml), _weights(reference), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the next update on clean data is finite and skips nothing
    assert torch.isfinite(torch.tensor(maml.meta_update(clean))) and maml.last_skipped == 0


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("vectorize", "first_order"), PATHS)
def test_under_raise_a_nan_task_raises_and_changes_nothing(name: str, vectorize: bool, first_order: bool) -> None:
    maml = _maml(name, vectorize, first_order, nonfinite="raise")
    maml.meta_update(_tasks(seed=1))  # the optimiser has state
    before, state = _weights(maml), copy.deepcopy(maml.optimizer.state_dict())
    with pytest.raises(NonFiniteError, match=r"meta_update: query loss of tasks \[2\] \(of 4\) expected finite"):
        maml.meta_update(_with_nan_target(_tasks(), task=2))
    for got, want in zip(_weights(maml), before, strict=True):
        assert torch.equal(got, want)
    after = maml.optimizer.state_dict()
    assert after["state"].keys() == state["state"].keys()
    for key, slots in state["state"].items():
        for slot, value in slots.items():
            assert torch.equal(after["state"][key][slot], value)


@pytest.mark.parametrize("vectorize", [True, False])
def test_every_task_bad_takes_no_step_and_returns_nan(vectorize: bool) -> None:
    maml = _maml("gru", vectorize, first_order=False)
    before = _weights(maml)
    batch = _tasks()
    huge = TaskBatch(batch.support_x, batch.support_y, batch.query_x, torch.full_like(batch.query_y, float("inf")))
    assert torch.isnan(torch.tensor(maml.meta_update(huge)))
    assert maml.last_skipped == 4
    for got, want in zip(_weights(maml), before, strict=True):
        assert torch.equal(got, want)
    assert all(p.grad is not None and not p.grad.any() for p in maml.parameters())


def test_a_non_finite_meta_gradient_with_finite_losses_skips_the_step() -> None:
    # sqrt(|0|) has an infinite derivative at 0: the loss is finite, its gradient NaN (0 * inf)
    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).pow(2).mean() + (pred.sum() * 0).abs().sqrt()

    for nonfinite in ("skip", "raise"):
        torch.manual_seed(3)
        model = make_model("mlp", 3, 2, hidden_dim=8)
        maml = MetaMAML(model, inner_lr=0.05, num_inner_steps=0, loss_fn=loss_fn, nonfinite=nonfinite)
        before = _weights(maml)
        if nonfinite == "raise":
            with pytest.raises(NonFiniteError, match="meta-gradient over tasks"):
                maml.meta_update(_tasks())
        else:
            assert torch.isnan(torch.tensor(maml.meta_update(_tasks())))
            assert maml.last_skipped == 4
        for got, want in zip(_weights(maml), before, strict=True):
            assert torch.equal(got, want)


def test_huge_targets_with_a_large_inner_lr_never_leave_the_weights_non_finite() -> None:
    batch = _tasks()
    big = TaskBatch(batch.support_x, batch.support_y * 1e6, batch.query_x, batch.query_y * 1e6)
    torch.manual_seed(3)
    maml = MetaMAML(make_model("mlp", 3, 2, hidden_dim=8), inner_lr=10.0, num_inner_steps=8)
    # unguarded, this batch's meta-loss and meta-gradient overflow
    loss = maml.meta_loss(big)
    loss.backward()
    assert not torch.isfinite(loss) and not all(torch.isfinite(p.grad).all() for p in maml.parameters())
    before = _weights(maml)
    maml.meta_update(big)
    assert maml.last_skipped == 4
    for got, want in zip(_weights(maml), before, strict=True):
        assert torch.equal(got, want)


def test_adapt_and_evaluate_refuse_to_hand_back_non_finite_values() -> None:
    torch.manual_seed(3)
    maml = MetaMAML(make_model("mlp", 3, 2, hidden_dim=8), inner_lr=0.05)
    task = _tasks()[0]
    with pytest.raises(NonFiniteError, match="adapt: support_x and support_y expected finite values"):
        maml.adapt(task.support_x, torch.full_like(task.support_y, float("nan")))
    diverging = MetaMAML(maml.model, inner_lr=1e30, num_inner_steps=3)
    with pytest.raises(NonFiniteError, match=r"adapt: the fast weights after 3 inner step\(s\) are not finite"):
        diverging.adapt(task.support_x, task.support_y * 1e6)
    with pytest.raises(NonFiniteError, match="evaluate: query loss after k inner steps expected finite"):
        diverging.evaluate(type(task)(task.support_x, task.support_y * 1e6, task.query_x, task.query_y))
    assert maml.evaluate(task, steps=(0, 1)) == pytest.approx(maml.evaluate(task, steps=(0, 1)))


def test_nonfinite_policy_is_checked() -> None:
    with pytest.raises(ValueError, match=r"MAMLConfig.nonfinite: expected one of \['skip', 'raise'\], got 'ignore'"):
        MetaMAML(make_model("mlp", 3, 2, hidden_dim=8), nonfinite="ignore")
    for field in ("inner_lr", "outer_lr"):
        with pytest.raises(ValueError, match=rf"MAMLConfig.{field}: expected a non-negative float \(finite\), got inf"):
            MetaMAML(make_model("mlp", 3, 2, hidden_dim=8), **{field: float("inf")})
