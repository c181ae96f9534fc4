"""The Adapter on every registered model: it helps under a dynamics shift, equals a reference
optimiser loop, survives adversarial input, touches only the selected parameters and undoes
itself exactly."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map

from adaptation import AdaptationConfig, Adapter
from models import MODELS, make_model
from tests.adaptation._common import IN, OUT, all_finite, assert_same, model, weights

pytestmark = pytest.mark.parametrize("name", sorted(MODELS))

# ---- a linear system whose dynamics change mid-stream ----------------------------------------

S, U = 3, 2  # state and action sizes; model input [s, u], target s' - s


def _system(seed: int) -> tuple[Tensor, Tensor]:
    """s' = A s + B u with A = 0.9 * a random rotation (stable) and a random B."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(S, S, generator=g))
    return 0.9 * q, torch.randn(S, U, generator=g)


def _rollout(system: tuple[Tensor, Tensor], batch: int, steps: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    A, B = system
    s = torch.randn(batch, S, generator=g)
    xs, ys = [], []
    for _ in range(steps):
        u = torch.randn(batch, U, generator=g)
        s_next = s @ A.T + u @ B.T
        xs.append(torch.cat([s, u], -1))
        ys.append(s_next - s)
        s = s_next
    return torch.stack(xs, 1), torch.stack(ys, 1)  # (batch, steps, S + U), (batch, steps, S)


def _stream_errors(m: torch.nn.Module, strategy: str, x: Tensor, y: Tensor, window: int) -> list[float]:
    """Prequential error per window: each window is scored before the model adapts on it."""
    adapter = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=5), strategy=strategy)
    errors = []
    with adapter.session():
        state = m.init_state(x.shape[0])
        for start in range(0, x.shape[1], window):
            xw, yw = x[:, start : start + window], y[:, start : start + window]
            loss, steps = adapter.update_step(xw, yw, state)
            assert steps == (5 if strategy == "online" else 0)
            with torch.no_grad():
                _, state = m(xw, state)
            errors.append(loss)
    return errors


def test_online_adaptation_beats_none_when_the_dynamics_change(name: str) -> None:
    torch.manual_seed(0)
    m = make_model(name, S + U, S, hidden_dim=16)
    g = torch.Generator().manual_seed(1)
    system_a, system_b = _system(10), _system(11)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(120):  # train on system A
        x, y = _rollout(system_a, 16, 8, g)
        loss = (m(x, m.init_state(16))[0] - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = weights(m)
    xa, ya = _rollout(system_a, 1, 60, g)
    xb, yb = _rollout(system_b, 1, 140, g)
    x, y = torch.cat([xa, xb], 1), torch.cat([ya, yb], 1)  # switch to system B at step 60

    none = _stream_errors(m, "none", x, y, window=10)
    assert_same(m, trained)  # the session undid nothing because nothing changed
    online = _stream_errors(m, "online", x, y, window=10)
    assert_same(m, trained)  # the session undid the adaptation
    after_none, after_online = sum(none[6:]), sum(online[6:])
    assert after_none / 14 > 2 * sum(none[:6]) / 6  # per window, the switch hurts the unadapted model
    assert after_online < 0.7 * after_none, (after_online, after_none)
    assert sum(online) < 0.8 * sum(none)


# ---- equality to a reference loop ------------------------------------------------------------


def test_update_step_equals_adam_with_the_state_held_fixed(name: str) -> None:
    m = model(name)
    reference = copy.deepcopy(m)
    x0, x, y = torch.randn(2, 5, IN), torch.randn(2, 7, IN), torch.randn(2, 7, OUT)
    _, state = m(x0, m.init_state(2))  # a state that carries a graph back into the weights
    state_copy = tree_map(lambda t: t.detach().clone(), state)
    cfg = AdaptationConfig(lr=1e-2, num_steps=4, grad_clip_norm=None)

    loss, steps = Adapter(m, cfg).update_step(x, y, state)

    opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    first = None
    for _ in range(4):
        pred, _ = reference(x, state_copy)
        ref_loss = (pred - y).pow(2).mean()
        first = float(ref_loss.detach()) if first is None else first
        opt.zero_grad()
        ref_loss.backward()
        opt.step()
    assert steps == 4
    assert loss == pytest.approx(first, rel=1e-6)
    for (k, p), (_, q) in zip(m.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=k)
    for a, b in zip(tree_flatten(state)[0], tree_flatten(state_copy)[0], strict=True):
        assert torch.equal(a.detach(), b)  # the caller's state is untouched


def test_adam_and_sgd_both_lower_the_loss(name: str) -> None:
    x, y = torch.randn(3, 6, IN), torch.randn(3, 6, OUT)
    results = {}
    for optimizer, lr in (("adam", 1e-2), ("sgd", 0.1)):
        m = model(name)
        info = Adapter(m, AdaptationConfig(lr=lr, num_steps=5, optimizer=optimizer)).adapt((x, y))
        assert info["updated"] and info["steps"] == 5 and not info["rolled_back"]
        assert info["loss"] < info["loss_before"]
        with torch.no_grad():  # the reported loss is the loss at the new weights
            now = float((m(x, m.init_state(3))[0] - y).pow(2).mean())
        assert info["loss"] == pytest.approx(now, rel=1e-5)
        results[optimizer] = weights(m)
    assert any(not torch.equal(results["adam"][k], results["sgd"][k]) for k in results["adam"])


def test_single_step_inputs_and_custom_loss(name: str) -> None:
    m = model(name)
    x, y = torch.randn(6, IN), torch.randn(6, OUT)  # (B, D): one step
    info = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=3)).adapt(
        {"x": x, "y": y}, loss_fn=lambda out, tgt: (out - tgt).abs().mean()
    )
    with torch.no_grad():
        mae = float((m(x, m.init_state(6))[0] - y).abs().mean())
    assert info["loss"] == pytest.approx(mae, rel=1e-5)
    assert info["loss"] < info["loss_before"]


# ---- which parameters move -------------------------------------------------------------------


def test_callers_gradients_are_left_as_they_were(name: str) -> None:
    m = model(name)
    x, y = torch.randn(3, 6, IN), torch.randn(3, 6, OUT)
    m(x, m.init_state(3))[0].sum().backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    assert grads
    assert Adapter(m, AdaptationConfig(lr=1e-2, num_steps=2)).adapt((x, y))["updated"]
    for k, p in m.named_parameters():
        assert (p.grad is None) == (k not in grads), k
        if p.grad is not None:
            assert torch.equal(p.grad, grads[k]), k


def test_param_filter_leaves_the_others_untouched(name: str) -> None:
    m = model(name)
    names = [n for n, _ in m.named_parameters()]
    head = names[-1]
    x, y = torch.randn(3, 6, IN), torch.randn(3, 6, OUT)
    for params in (re.escape(head) + "$", (head,)):
        m = model(name)
        before = weights(m)
        adapter = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=3, params=params))
        assert [n for n, _ in adapter.params] == [n for n in names if n == head or (
            isinstance(params, tuple) and head in n)]  # fmt: skip
        adapter.adapt((x, y))
        after = dict(m.named_parameters())
        for n in names:
            if n in dict(adapter.params):
                assert not torch.equal(after[n], before[n]), n
            else:
                assert torch.equal(after[n], before[n]), n
                assert after[n].grad is None and after[n].requires_grad


# ---- undo ------------------------------------------------------------------------------------


def test_reset_restores_weights_and_optimiser_state_exactly(name: str) -> None:
    m = model(name)
    fresh = copy.deepcopy(m)
    start = weights(m)
    x, y = torch.randn(3, 6, IN), torch.randn(3, 6, OUT)
    cfg = AdaptationConfig(lr=1e-2, num_steps=3, trust_region=0.5, ema_decay=0.9)
    adapter = Adapter(m, cfg)
    for _ in range(3):
        adapter.adapt((x, y))
    assert any(not torch.equal(a, b) for a, b in zip(weights(m).values(), start.values(), strict=True))
    adapter.reset()
    assert_same(m, start)
    # the optimiser state and anchor are back too: the next call equals a brand-new Adapter's
    info = adapter.adapt((x, y))
    info_fresh = Adapter(fresh, cfg).adapt((x, y))
    assert info == info_fresh
    assert_same(m, weights(fresh))


def test_session_restores_on_exit_even_after_an_error(name: str) -> None:
    m = model(name)
    x, y = torch.randn(3, 6, IN), torch.randn(3, 6, OUT)
    adapter = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=2))
    adapter.adapt((x, y))  # the session restores what it found on entry, not the start
    entry = weights(m)
    with adapter.session():
        adapter.adapt((x, y))
        assert any(not torch.equal(a, b) for a, b in zip(weights(m).values(), entry.values(), strict=True))
    assert_same(m, entry)
    with pytest.raises(RuntimeError, match="boom"), adapter.session():
        adapter.adapt((x, y))
        raise RuntimeError("boom")
    assert_same(m, entry)


# ---- adversarial input -----------------------------------------------------------------------


def test_nan_targets_and_inputs_roll_back(name: str) -> None:
    m = model(name)
    start = weights(m)
    adapter = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=3))
    x, y = torch.randn(2, 5, IN), torch.randn(2, 5, OUT)
    y_nan = y.clone()
    y_nan[0, 2, 1] = float("nan")
    x_inf = x.clone()
    x_inf[1, 3, 0] = float("inf")
    for batch in ((x, y_nan), (x_inf, y)):
        info = adapter.adapt(batch)
        assert info["rolled_back"] and not info["updated"] and info["steps"] == 0
        assert_same(m, start)
    assert adapter.adapt((x, y))["updated"]  # and it still adapts on clean data afterwards


def test_huge_targets_and_lr_keep_weights_finite(name: str) -> None:
    x, y = torch.randn(2, 5, IN), 1e6 * torch.randn(2, 5, OUT)
    for optimizer in ("sgd", "adam"):
        m = model(name)
        adapter = Adapter(m, AdaptationConfig(lr=10.0, num_steps=5, optimizer=optimizer, grad_clip_norm=None))
        rolled_back = []
        for _ in range(3):
            before = weights(m)
            info = adapter.adapt((x, y))
            rolled_back.append(info["rolled_back"])
            assert all_finite(m)
            if info["rolled_back"]:
                assert_same(m, before)
                assert not info["updated"]
            else:
                assert torch.isfinite(torch.tensor([info["loss"], info["grad_norm"]])).all()
        if optimizer == "sgd":  # plain SGD at lr 10 overflows within three calls on every model
            assert any(rolled_back)


def test_a_loss_that_turns_non_finite_mid_call_rolls_back_the_whole_call(name: str) -> None:
    m = model(name)
    start = weights(m)
    adapter = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=5))
    calls = []

    def flaky(out: Tensor, tgt: Tensor | None) -> Tensor:
        calls.append(1)
        loss = (out - tgt).pow(2).mean()
        return loss * float("inf") if len(calls) == 3 else loss

    info = adapter.adapt((torch.randn(2, 5, IN), torch.randn(2, 5, OUT)), loss_fn=flaky)
    assert len(calls) == 3
    assert info["rolled_back"] and not info["updated"] and info["steps"] == 0
    assert_same(m, start)
    # the optimiser state was rolled back too: the next call equals a fresh Adapter's
    x, y = torch.randn(2, 5, IN), torch.randn(2, 5, OUT)
    fresh = model(name)
    assert adapter.adapt((x, y)) == Adapter(fresh, AdaptationConfig(lr=1e-2, num_steps=5)).adapt((x, y))


def test_none_strategy_measures_without_updating(name: str) -> None:
    m = model(name)
    start = weights(m)
    x, y = torch.randn(2, 5, IN), torch.randn(2, 5, OUT)
    info = Adapter(m, strategy="none").adapt((x, y))
    with torch.no_grad():
        mse = float((m(x, m.init_state(2))[0] - y).pow(2).mean())
    assert info["loss"] == info["loss_before"] == pytest.approx(mse, rel=1e-6)
    assert info["steps"] == 0 and not info["updated"]
    assert_same(m, start)


def test_predict_then_update_equals_a_prediction_then_adapt(name: str) -> None:
    """The prediction is the adaptation's first forward: the same outputs, end state and weights."""
    m = model(name)
    reference = copy.deepcopy(m)
    x, y = torch.randn(2, 7, IN), torch.randn(2, 7, OUT)
    reset = torch.zeros(2, 7, dtype=torch.bool)
    reset[1, 4] = True  # a new episode inside the window
    _, state = m(torch.randn(2, 3, IN), m.init_state(2))
    state_copy = tree_map(lambda t: t.detach().clone(), state)
    cfg = AdaptationConfig(lr=1e-2, num_steps=3, optimizer="sgd")

    pred, end, loss, steps = Adapter(m, cfg).predict_then_update(x, y, state, reset=reset)

    with torch.no_grad():
        ref_pred, ref_end = reference(x, state_copy, reset=reset)
    info = Adapter(reference, cfg).adapt({"x": x, "y": y, "state": state_copy, "reset": reset})
    # equal up to float rounding: some kernels (torch's LSTM on CPU) differ with autograd on
    torch.testing.assert_close(pred, ref_pred, rtol=1e-6, atol=1e-7)
    assert not pred.requires_grad
    for a, b in zip(tree_flatten(end)[0], tree_flatten(ref_end)[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not a.requires_grad
    assert (loss, steps) == (info["loss_before"], info["steps"]) and steps == 3
    for (k, p), (_, q) in zip(m.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(p, q), k
