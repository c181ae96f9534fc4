"""Each guard does what it says, as a pure function and inside the Adapter, for every model."""

from __future__ import annotations

import math

import pytest
import torch

from adaptation import AdaptationConfig, Adapter
from adaptation.guards import (
    all_finite,
    bound_step,
    clip_by_total_norm,
    ema_update,
    guard_update,
    project_to_ball,
    total_norm,
)
from models import MODELS
from tests.adaptation._common import IN, OUT, flat, model


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 8, IN, generator=g), torch.randn(4, 8, OUT, generator=g)


# ---- the pure functions --------------------------------------------------------------------


def test_clip_by_total_norm_matches_torch() -> None:
    grads = [torch.randn(3, 4), torch.randn(7)]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    torch_norm = float(torch.nn.utils.clip_grad_norm_(params, 0.5))
    clipped, norm = clip_by_total_norm(grads, 0.5)
    assert norm == pytest.approx(torch_norm, rel=1e-6)
    assert total_norm(clipped) == pytest.approx(0.5, rel=1e-5)
    for c, p in zip(clipped, params, strict=True):
        torch.testing.assert_close(c, p.grad)
    unclipped, _ = clip_by_total_norm(grads, 100.0)
    assert all(u is g for u, g in zip(unclipped, grads, strict=True))
    # a huge but finite fp32 gradient has a finite norm (its square would overflow fp32)
    huge, norm = clip_by_total_norm([torch.full((4,), 1e30)], 1.0)
    assert norm == pytest.approx(2e30, rel=1e-6)
    assert total_norm(huge) == pytest.approx(1.0, rel=1e-5)


def test_total_norm_and_all_finite_over_mixed_dtypes() -> None:
    ts = [torch.randn(3, 4), torch.randn(5, dtype=torch.float64), torch.randn(2, 3, dtype=torch.complex64)]
    # the norm of the per-tensor float64 norms, bit for bit (complex elements as pairs of reals)
    norms = [torch.linalg.vector_norm(torch.view_as_real(t) if t.is_complex() else t, dtype=torch.float64)
             for t in ts]  # fmt: skip
    assert total_norm(ts) == float(torch.linalg.vector_norm(torch.stack(norms)))
    assert total_norm([]) == 0.0
    assert all_finite(ts) and all_finite([])
    for i, bad in enumerate([math.nan, math.inf, complex(0.0, math.nan)]):
        broken = [t.clone() for t in ts]
        broken[i if i < 2 else 2].view(-1)[1] = bad
        assert not all_finite(broken), bad


def test_project_to_ball_is_the_radial_projection() -> None:
    anchor = [torch.zeros(2, 2), torch.ones(3)]
    params = [torch.full((2, 2), 3.0), torch.ones(3) + 4.0]
    out = project_to_ball(params, anchor, 1.0)
    d = flat(out) - flat(anchor)
    assert float(d.norm()) == pytest.approx(1.0, rel=1e-6)
    direction = flat(params) - flat(anchor)
    torch.testing.assert_close(d, direction / direction.norm())
    inside = [a + 0.01 for a in anchor]
    assert all(torch.equal(o, i) for o, i in zip(project_to_ball(inside, anchor, 1.0), inside, strict=True))


def test_guard_update_keeps_both_bounds_when_projection_alone_would_break_the_step_bound() -> None:
    # old on the sphere's boundary at e_0; the proposal moves far inward along e_0 and a little
    # outward in many other coordinates: the radial projection of the bounded step leaves the
    # ball's direction so that some element would move more than the bound.
    n, radius, max_step = 400, 1.0, 0.05
    anchor = [torch.zeros(n)]
    old = [torch.zeros(n)]
    old[0][0] = radius
    proposed = [old[0].clone()]
    proposed[0][0] = 0.0
    proposed[0][1:] = max_step
    radial = project_to_ball(bound_step(proposed, old, max_step), anchor, radius)
    assert float((radial[0] - old[0]).abs().max()) > max_step * 1.01  # the case is real
    out = guard_update(old, proposed, anchor, max_step, radius)
    assert float((out[0] - old[0]).abs().max()) <= max_step * (1 + 1e-6)
    assert float(out[0].norm()) <= radius * (1 + 1e-6)
    assert float((out[0] - old[0]).abs().max()) > 0  # it still moves

    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        anchor = [torch.randn(5, generator=g), torch.randn(3, 2, generator=g)]
        old = [a + 0.1 * torch.randn(a.shape, generator=g) for a in anchor]
        radius = total_norm([o - a for o, a in zip(old, anchor, strict=True)]) * 1.2
        proposed = [o + torch.randn(o.shape, generator=g) for o in old]
        out = guard_update(old, proposed, anchor, 0.3, radius)
        assert float((flat(out) - flat(old)).abs().max()) <= 0.3 * (1 + 1e-6)
        assert float((flat(out) - flat(anchor)).norm()) <= radius * (1 + 1e-5)


def test_guards_treat_complex_parameters_as_pairs_of_reals() -> None:
    g = torch.Generator().manual_seed(0)
    anchor = [torch.randn(6, generator=g, dtype=torch.complex64), torch.randn(4, generator=g)]
    old = [a.clone() for a in anchor]
    proposed = [o + 3 * torch.randn(o.shape, generator=g, dtype=o.dtype) for o in old]
    out = guard_update(old, proposed, anchor, 0.1, 0.25)
    assert out[0].dtype == torch.complex64
    change = torch.cat([torch.view_as_real(out[0] - old[0]).reshape(-1), out[1] - old[1]])
    assert float(change.abs().max()) <= 0.1 * (1 + 1e-6)
    assert float(change.norm()) <= 0.25 * (1 + 1e-5)
    assert total_norm(anchor) == pytest.approx(
        float(torch.cat([torch.view_as_real(anchor[0]).reshape(-1), anchor[1]]).norm()), rel=1e-6
    )


def test_ema_update_formula() -> None:
    a, p = [torch.zeros(3)], [torch.ones(3) * 2]
    torch.testing.assert_close(ema_update(a, p, 0.75)[0], torch.full((3,), 0.5))
    assert ema_update(a, p, 0.0)[0] is a[0]


# ---- inside the Adapter, for every model -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_max_param_step_bounds_every_element_of_every_step(name: str) -> None:
    m = model(name)
    bound = 1e-3
    adapter = Adapter(m, AdaptationConfig(lr=1.0, num_steps=1, grad_clip_norm=None, max_param_step=bound))
    x, y = _batch()
    largest = 0.0
    for _ in range(3):
        before = flat(list(m.parameters()))
        info = adapter.adapt((x, y))
        assert info["updated"]
        change = float((flat(list(m.parameters())) - before).abs().max())
        assert change <= bound * (1 + 1e-4)
        largest = max(largest, change)
    assert largest >= 0.99 * bound  # lr = 1 would move far more: the bound binds


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trust_region_keeps_weights_within_radius_of_the_start(name: str) -> None:
    m = model(name)
    start = flat(list(m.parameters()))
    radius = 0.05
    cfg = AdaptationConfig(lr=5.0, optimizer="sgd", num_steps=4, grad_clip_norm=None, trust_region=radius)
    adapter = Adapter(m, cfg)
    x, y = _batch()
    for _ in range(4):
        info = adapter.adapt((x, y))
        if info["rolled_back"]:
            continue
        dist = float((flat(list(m.parameters())) - start).norm())
        assert dist <= radius * (1 + 1e-5)
    assert dist >= 0.9 * radius  # it binds


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trust_region_follows_an_ema_anchor(name: str) -> None:
    m = model(name)
    start = flat(list(m.parameters()))
    radius = 0.02
    cfg = AdaptationConfig(lr=0.05, num_steps=2, grad_clip_norm=None, trust_region=radius, ema_decay=0.5)
    adapter = Adapter(m, cfg)
    x, y = _batch()
    for _ in range(15):
        anchor_before = flat(adapter.anchor)
        assert adapter.adapt((x, y))["updated"]
        params = flat([p for _, p in adapter.params])
        assert float((params - flat(adapter.anchor)).norm()) <= radius * (1 + 1e-5)
        # the anchor moved towards the weights by the EMA rule, no further
        assert float((flat(adapter.anchor) - anchor_before).norm()) > 0
    assert float((flat(list(m.parameters())) - start).norm()) > 1.5 * radius  # drifted with it


@pytest.mark.parametrize("name", sorted(MODELS))
def test_clipping_bounds_the_gradient_norm_used(name: str) -> None:
    m = model(name)
    clip, lr = 1e-3, 0.1
    adapter = Adapter(m, AdaptationConfig(lr=lr, optimizer="sgd", grad_clip_norm=clip))
    before = flat(list(m.parameters()))
    info = adapter.adapt(_batch())
    used = float((flat(list(m.parameters())) - before).norm()) / lr  # plain SGD: step = lr * g
    assert info["grad_norm"] > 10 * clip  # the raw gradient was large; it is reported unclipped
    assert used <= clip * (1 + 1e-3)
    assert used >= clip * 0.99


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tolerance_stops_early_and_reports_converged(name: str) -> None:
    x, y = _batch()
    m = model(name)
    info = Adapter(m, AdaptationConfig(lr=1e-3, num_steps=6, tolerance=1e9)).adapt((x, y))
    assert info["converged"] and info["steps"] == 1 and info["updated"]
    m = model(name)
    info = Adapter(m, AdaptationConfig(lr=1e-3, num_steps=6, tolerance=None)).adapt((x, y))
    assert not info["converged"] and info["steps"] == 6


def test_tolerance_stops_when_the_improvement_is_small() -> None:
    m = model("mlp")
    x, y = _batch()
    tol = 1e-3
    cfg = AdaptationConfig(lr=0.05, optimizer="sgd", num_steps=2000, tolerance=tol, grad_clip_norm=None)
    info = Adapter(m, cfg).adapt((x, y))
    assert info["converged"] and 1 < info["steps"] < 2000
    assert info["loss"] < info["loss_before"]
    # one more plain SGD step from here improves by less than the tolerance, as it did last time
    again = Adapter(m, AdaptationConfig(lr=0.05, optimizer="sgd", num_steps=1, grad_clip_norm=None))
    step = again.adapt((x, y))
    assert step["loss_before"] == pytest.approx(info["loss"], rel=1e-6)
    assert step["loss_before"] - step["loss"] < 2 * tol


def test_a_step_that_overflows_the_weights_is_rolled_back_even_if_the_loss_stays_finite() -> None:
    m = model("mlp")
    bias = dict(m.named_parameters())["net.4.bias"]
    start = bias.detach().clone()

    def saturating(outputs: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        # gradient 1e36 while unsaturated; at -inf the loss is -1 and the gradient 0, both finite
        return torch.clamp(-1e36 * bias[0], min=-1.0)  # bias[0] starts < 0

    cfg = AdaptationConfig(lr=1e4, optimizer="sgd", num_steps=1, grad_clip_norm=None)
    info = Adapter(m, cfg).adapt(_batch(), loss_fn=saturating)
    assert info["rolled_back"] and not info["updated"]
    assert torch.equal(bias.detach(), start)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_diverging_call_is_rolled_back_although_every_value_stays_finite(name: str) -> None:
    # L = (w - w0 - 1)^2 on one weight: plain SGD at lr 50 maps w - c to (1 - 2 x 50)(w - c), so
    # the loss goes from 1 to 99^2 = 9801 in one step: finite, and past the factor of 1000
    m = model(name)
    w = next(iter(m.parameters()))
    target = w.detach().flatten()[0] + 1.0

    def quadratic(outputs: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        return (w.flatten()[0] - target).pow(2) + 0.0 * outputs.sum()

    cfg = dict(lr=50.0, optimizer="sgd", num_steps=1, grad_clip_norm=None)
    free = Adapter(model(name), AdaptationConfig(**cfg, divergence_factor=None))
    w_free = next(iter(free.model.parameters()))
    target_free = w_free.detach().flatten()[0] + 1.0
    unguarded = free.adapt(_batch(), loss_fn=lambda o, t: (w_free.flatten()[0] - target_free).pow(2) + 0.0 * o.sum())
    assert unguarded["loss_before"] == pytest.approx(1.0) and unguarded["loss"] == pytest.approx(9801.0, rel=1e-4)
    start = flat(list(m.parameters()))
    info = Adapter(m, AdaptationConfig(**cfg)).adapt(_batch(), loss_fn=quadratic)
    assert info["rolled_back"] and info["rollback_reason"] == "diverged"
    assert not info["updated"] and info["steps"] == 0 and info["loss"] == pytest.approx(1.0)
    assert torch.equal(flat(list(m.parameters())), start)


def test_divergence_is_measured_against_the_starting_loss() -> None:
    m = model("mlp")
    adapter = Adapter(m, AdaptationConfig(divergence_factor=10.0))
    assert not adapter._diverged(9.9, 1.0) and adapter._diverged(10.1, 1.0)  # 10 x a positive loss
    assert not adapter._diverged(7.0, -1.0) and adapter._diverged(9.5, -1.0)  # 9 x |-1| above it
    assert adapter._diverged(1e-9, 0.0)  # any rise from a perfect fit
    assert not Adapter(m, AdaptationConfig(divergence_factor=None))._diverged(1e30, 1.0)
