"""MetaMAML's single-task and meta-batch API: adapt, forward_with_weights, meta_update,
evaluate, and the errors on bad input."""

from __future__ import annotations

import pytest
import torch

from meta import MAMLConfig, MetaMAML, Task, TaskBatch, mse, sgd_update
from models import make_model


def _task(b: int = 3, t: int = 4, d_in: int = 2, d_out: int = 1) -> Task:
    return Task(
        torch.randn(b, t, d_in), torch.randn(b, t, d_out),
        torch.randn(b, t + 1, d_in), torch.randn(b, t + 1, d_out),
    )  # fmt: skip


def test_adapt_is_one_sgd_step_per_inner_step() -> None:
    model = make_model("neural-state", 2, 1, hidden_dim=8)
    task = _task()
    maml = MetaMAML(model, inner_lr=0.05, num_inner_steps=2)
    fast = maml.adapt(task.support_x, task.support_y)
    expected = {k: p.detach().clone() for k, p in model.named_parameters()}
    for _ in range(2):
        for p, v in zip(model.parameters(), expected.values(), strict=True):
            p.data.copy_(v)
        model.zero_grad()
        mse(model(task.support_x, model.init_state(3))[0], task.support_y).backward()
        expected = {k: v - 0.05 * p.grad for (k, v), p in zip(expected.items(), model.parameters(), strict=True)}
    for k in expected:
        torch.testing.assert_close(fast[k].detach(), expected[k], atol=1e-6, rtol=0)
    assert list(fast) == [k for k, _ in model.named_parameters()]
    assert fast[next(iter(fast))].requires_grad  # differentiable w.r.t. the initialisation


def test_adapt_uses_the_given_state_and_step_override() -> None:
    model = make_model("neural-state", 2, 1, hidden_dim=8)
    task = _task()
    maml = MetaMAML(model, inner_lr=0.05)
    _, warm = model(torch.randn(3, 5, 2), model.init_state(3))
    a = maml.adapt(task.support_x, task.support_y, state=warm)
    b = maml.adapt(task.support_x, task.support_y)
    assert not torch.allclose(a["readout.2.bias"], b["readout.2.bias"])
    zero = maml.adapt(task.support_x, task.support_y, num_steps=0)
    for k, p in model.named_parameters():
        torch.testing.assert_close(zero[k], p, atol=0, rtol=0)


def test_forward_with_weights_equals_model_with_those_weights() -> None:
    model = make_model("neural-state", 2, 1, hidden_dim=8)
    task = _task()
    maml = MetaMAML(model, inner_lr=0.1)
    fast = maml.adapt(task.support_x, task.support_y)
    y, state = maml.forward_with_weights(task.query_x, fast)
    other = make_model("neural-state", 2, 1, hidden_dim=8)
    other.load_state_dict({k: v.detach() for k, v in fast.items()})
    y_ref, s_ref = other(task.query_x, other.init_state(3))
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(state, s_ref, atol=1e-6, rtol=0)


def test_sgd_update_is_pure_and_supports_per_parameter_lrs() -> None:
    params = {"w": torch.ones(2), "b": torch.zeros(1)}
    grads = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([4.0])}
    out = sgd_update(params, grads, {"w": torch.tensor([0.1, 0.5]), "b": torch.tensor(0.25)})
    torch.testing.assert_close(out["w"], torch.tensor([0.9, 0.0]))
    torch.testing.assert_close(out["b"], torch.tensor([-1.0]))
    torch.testing.assert_close(params["w"], torch.ones(2))  # inputs untouched
    torch.testing.assert_close(sgd_update(params, grads, 0.5)["b"], torch.tensor([-2.0]))


@pytest.mark.parametrize("meta_sgd", [False, True])
def test_meta_update_leaves_the_meta_gradient_and_takes_an_adam_step(meta_sgd: bool) -> None:
    model = make_model("mlp", 2, 1, hidden_dim=8)
    tasks = [_task() for _ in range(3)]
    maml = MetaMAML(model, inner_lr=0.1, outer_lr=1e-2, meta_sgd=meta_sgd)
    before = [p.detach().clone() for p in maml.parameters()]
    expected_loss = maml.meta_loss(tasks)
    expected = torch.autograd.grad(expected_loss, maml.parameters())
    loss = maml.meta_update(tasks)
    assert loss == pytest.approx(expected_loss.item(), abs=1e-6)
    for p, g, old in zip(maml.parameters(), expected, before, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=0)
        # Adam's first step moves every coordinate with a nonzero gradient by about outer_lr
        moved = (p.detach() - old).abs()[g.abs() > 1e-8]
        torch.testing.assert_close(moved, torch.full_like(moved, 1e-2), atol=1e-4, rtol=0)
    assert len(maml.inner_lrs) == (len(list(model.parameters())) if meta_sgd else 0)


def test_meta_training_lowers_the_meta_loss_on_fixed_tasks() -> None:
    model = make_model("mlp", 2, 1, hidden_dim=16)
    tasks = TaskBatch.stack([_task() for _ in range(4)])
    maml = MetaMAML(model, inner_lr=0.05, outer_lr=1e-2, num_inner_steps=2)
    first = maml.meta_update(tasks)
    for _ in range(30):
        last = maml.meta_update(tasks)
    assert last < 0.8 * first


def test_list_and_task_batch_give_the_same_meta_loss() -> None:
    model = make_model("neural-state", 2, 1, hidden_dim=8)
    tasks = [_task() for _ in range(3)]
    maml = MetaMAML(model, inner_lr=0.1, num_inner_steps=2)
    a = maml.meta_loss(tasks)
    b = maml.meta_loss(TaskBatch.stack(tasks))
    per_task = torch.stack([maml.meta_loss([t]) for t in tasks]).mean()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, per_task, atol=1e-6, rtol=0)


def test_non_sequence_tasks_work_on_both_paths() -> None:
    model = make_model("mlp", 2, 1, hidden_dim=8)
    tasks = TaskBatch(*(torch.randn(3, 5, d) for d in (2, 1, 2, 1)))  # (n, B, D)
    losses = [MetaMAML(model, vectorize=v).meta_loss(tasks) for v in (True, False)]
    torch.testing.assert_close(losses[0], losses[1])


def test_query_from_support_state_continues_the_adapted_support_state() -> None:
    model = make_model("neural-state", 2, 1, hidden_dim=8)
    task = _task()
    maml = MetaMAML(model, inner_lr=0.1, query_from_support_state=True)
    fast = maml.adapt(task.support_x, task.support_y)
    _, end = maml.forward_with_weights(task.support_x, fast)
    y, _ = maml.forward_with_weights(task.query_x, fast, end)
    torch.testing.assert_close(maml.meta_loss([task]), mse(y, task.query_y), atol=1e-6, rtol=0)
    fresh = MetaMAML(model, inner_lr=0.1).meta_loss([task])
    assert not torch.allclose(fresh, maml.meta_loss([task]))


def test_evaluate_matches_adapt_and_never_changes_the_model() -> None:
    model = make_model("neural-state", 2, 1, hidden_dim=8)
    a, b = _task(), _task()
    maml = MetaMAML(model, inner_lr=0.05, num_inner_steps=3)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    curve_b = maml.evaluate(b)
    assert len(curve_b) == 4
    maml.evaluate(a, steps=(0, 2, 7))
    assert maml.evaluate(b) == curve_b  # no leakage from task a
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshot[k], atol=0, rtol=0)
    for k in (0, 2):
        fast = maml.adapt(b.support_x, b.support_y, num_steps=k)
        y, _ = maml.forward_with_weights(b.query_x, fast)
        assert curve_b[k] == pytest.approx(mse(y, b.query_y).item(), abs=1e-6)
    support_curve = maml.evaluate(Task(b.support_x, b.support_y, b.support_x, b.support_y))
    assert support_curve[3] < support_curve[0]  # steps really descend the support loss


def test_errors_name_the_field_expected_and_given() -> None:
    model = make_model("mlp", 2, 1, hidden_dim=8)
    maml = MetaMAML(model)
    with pytest.raises(ValueError, match=r"tasks: expected at least one Task, got an empty"):
        maml.meta_update([])
    bad = Task(torch.randn(3, 4, 5), torch.randn(3, 4, 1), torch.randn(3, 4, 5), torch.randn(3, 4, 1))
    with pytest.raises(ValueError, match=r"tasks\[1\].support_x: expected shape .*2.* got \(3, 4, 5\)"):
        maml.meta_update([_task(), bad])
    with pytest.raises(
        ValueError, match=r"tasks\[1\].support_x: expected shape \(3, 4, 2\) \(as tasks\[0\]\).*\(4, 4, 2\)"
    ):
        maml.meta_update([_task(), _task(b=4)])  # different shapes cannot be vmapped together
    with pytest.raises(ValueError, match=r"Task.support_y: expected shape \(3, 4, '\*'\).*\(3, 5, 1\)"):
        Task(torch.randn(3, 4, 2), torch.randn(3, 5, 1), torch.randn(3, 4, 2), torch.randn(3, 4, 1))
    with pytest.raises(ValueError, match=r"Task.query_x: expected 2 features like support_x, got 3"):
        Task(torch.randn(3, 4, 2), torch.randn(3, 4, 1), torch.randn(3, 4, 3), torch.randn(3, 4, 1))
    with pytest.raises(ValueError, match=r"Task.query_x: expected 3 dims"):
        Task(torch.randn(3, 4, 2), torch.randn(3, 4, 1), torch.randn(3, 2), torch.randn(3, 1))
    with pytest.raises(ValueError, match=r"Task.query_y: expected 1 features like support_y, got 2"):
        Task(torch.randn(3, 4, 2), torch.randn(3, 4, 1), torch.randn(3, 4, 2), torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match=r"TaskBatch.query_x: expected 2 tasks.*got 3"):
        TaskBatch(*(torch.randn(n, 3, 2) for n in (2, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"query_x: expected batch size 3 \(the support's"):
        MetaMAML(model, query_from_support_state=True, vectorize=False).meta_loss(
            [_task(), Task(torch.randn(3, 4, 2), torch.randn(3, 4, 1), torch.randn(2, 4, 2), torch.randn(2, 4, 1))]
        )
    with pytest.raises(ValueError, match=r"mse: target expected shape \(3, 5, 1\).*got \(3, 5, 2\)"):
        mse(torch.zeros(3, 5, 1), torch.zeros(3, 5, 2))
    with pytest.raises(ValueError, match=r"MAMLConfig.num_inner_steps: expected an int >= 0, got -1"):
        MetaMAML(model, num_inner_steps=-1)
    with pytest.raises(ValueError, match=r"MAMLConfig.inner_lr: expected a non-negative float"):
        MAMLConfig(inner_lr=-0.1)
    with pytest.raises(ValueError, match=r"evaluate: steps expected .* got \(-1,\)"):
        maml.evaluate(_task(), steps=(-1,))
    with pytest.raises(ValueError, match=r"model expected a SequenceModel, got Linear"):
        MetaMAML(torch.nn.Linear(2, 1))  # type: ignore[arg-type]
