"""The one-chunk path of the SSM's sequence mode (T <= chunk_size, no reset: MAML's windows).

``models.kernels.two_level_scan.one_chunk_scan`` against a step-by-step loop, and the model's one-chunk path against
its chunked path (the same sequence with an all-False reset, which takes the general scan) in
values, gradients, Hessian-vector products, under vmap and under MAML's vmapped second order.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, vmap

from models.kernels import scan
from models.kernels.scan import diagonal_scan
from models.kernels.two_level_scan import one_chunk_scan
from models.ssm import SSM, SSMConfig
from tests.models.pytree_error import max_abs_error
from tests.models.scan_reference import complex_loop

IN, OUT = 4, 3



def _scan_inputs(n: int, batch: int, steps: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    return (
        -torch.rand(n, generator=gen, dtype=f64) * 2 - 1e-3,
        torch.rand(n, generator=gen, dtype=f64) * 2 * math.pi,
        torch.randn(n, 2, batch, steps, generator=gen, dtype=f64),
        torch.randn(n, 2, batch, generator=gen, dtype=f64),
    )


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("steps", [1, 2, 7, 32])
def test_one_chunk_scan_equals_loop(steps: int, batch: int) -> None:
    log_mag, phase, x, h0 = _scan_inputs(5, batch, steps, seed=steps)
    out = one_chunk_scan(log_mag, phase, x, h0)
    assert out.shape == x.shape
    torch.testing.assert_close(out, complex_loop(log_mag, phase, x, h0), atol=1e-10, rtol=0)


def test_one_chunk_scan_float32_keeps_the_phase() -> None:
    """float32 with |lambda| near 1 and large phases over 32 steps, against the float64 loop."""
    log_mag, phase, x, h0 = _scan_inputs(8, 2, 32)
    log_mag = torch.log(torch.empty(8, dtype=torch.float64).uniform_(0.99, 0.9999))
    phase = phase * 3  # up to 6 pi per step
    out = one_chunk_scan(log_mag.float(), phase.float(), x.float(), h0.float()).double()
    ref = complex_loop(log_mag.float().double(), phase.float().double(), x.float().double(), h0.float().double())
    assert (out - ref).abs().max() <= 2e-6 * ref.abs().max()


@pytest.mark.parametrize("path", ["real", "rotated"])
def test_one_chunk_scan_derivatives_equal_the_chunked_scan(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """First and second derivatives (MAML differentiates the scan twice) against the chunked
    scan with either within-chunk product, float64."""
    monkeypatch.setattr(scan, "_ROTATE_MAX_ROWS_PER_STEP", 1e9 if path == "rotated" else 0.0)
    monkeypatch.setattr(scan, "_ROTATE_WITHOUT_TRANSFORMS", True)
    inputs = _scan_inputs(4, 3, 19, seed=7)
    weight = torch.randn(4, 2, 3, 19, dtype=torch.float64)
    results = []
    for one_chunk in (True, False):
        leaves = [t.clone().requires_grad_() for t in inputs]
        h = one_chunk_scan(*leaves) if one_chunk else scan._scan_sequence(*leaves, None, 32)
        loss = (h * weight).sum()
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in grads), leaves)
        results.append([t.detach() for t in (loss, *grads, *second)])
    for one, chunked in zip(*results, strict=True):
        torch.testing.assert_close(one, chunked, atol=1e-9, rtol=1e-9)


def test_one_chunk_scan_under_vmap_and_grad_equals_per_sample() -> None:
    """vmap over a leading dimension of every input, with torch.func.grad inside (MAML's form)."""
    samples = [_scan_inputs(3, 2, 9, seed=s) for s in range(4)]
    stacked = [torch.stack(parts) for parts in zip(*samples, strict=True)]

    def loss(log_mag: torch.Tensor, phase: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return one_chunk_scan(log_mag, phase, x, h0).square().sum()

    values = vmap(lambda *a: one_chunk_scan(*a))(*stacked)
    grads = vmap(torch.func.grad(loss, argnums=(0, 1, 2, 3)))(*stacked)
    for i, sample in enumerate(samples):
        torch.testing.assert_close(values[i], one_chunk_scan(*sample), atol=1e-12, rtol=0)
        leaves = [t.clone().requires_grad_() for t in sample]
        expected = torch.autograd.grad(loss(*leaves), leaves)
        for g, e in zip(grads, expected, strict=True):
            torch.testing.assert_close(g[i], e, atol=1e-10, rtol=0)


def test_diagonal_scan_takes_the_one_chunk_path_only_without_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = scan.one_chunk_scan
    monkeypatch.setattr(scan, "one_chunk_scan", lambda *a: calls.append(1) or real(*a))
    log_mag, phase, x, h0 = _scan_inputs(3, 2, 8)
    diagonal_scan(log_mag, phase, x, h0, None, 8)
    assert calls == [1]
    diagonal_scan(log_mag, phase, x, h0, torch.zeros(2, 8, dtype=torch.bool), 8)
    diagonal_scan(log_mag, phase, x, h0, None, 4)  # two chunks
    assert calls == [1]


def test_one_chunk_scan_rejects_bad_shapes() -> None:
    z = torch.zeros
    with pytest.raises(ValueError, match=r"one_chunk_scan: expected .*x \(N, 2, B, T\).*got .*\(3, 3, 2, 5\)"):
        one_chunk_scan(z(3), z(3), z(3, 3, 2, 5), z(3, 2, 2))
    with pytest.raises(ValueError, match=r"h0 \(3, 2, 2\).*got .*\(3, 2\)"):
        one_chunk_scan(z(3), z(3), z(3, 2, 2, 5), z(3, 2))
    with pytest.raises(ValueError, match=r"log_mag, phase \(3,\).*got \(4,\)"):
        one_chunk_scan(z(4), z(3), z(3, 2, 2, 5), z(3, 2, 2))


# ---- the model ---------------------------------------------------------------------------------


def _model(chunk: int = 32, dtype: torch.dtype = torch.float64) -> SSM:
    torch.manual_seed(0)
    return SSM(SSMConfig(input_dim=IN, output_dim=OUT, hidden_dim=12, state_dim=6, chunk_size=chunk)).to(dtype)


def _run(model: SSM, params: dict[str, torch.Tensor], x: torch.Tensor, state: tuple, one_chunk: bool):  # type: ignore[no-untyped-def]
    """The model with ``params``; the chunked path is forced by an all-False reset (same function)."""
    reset = None if one_chunk else torch.zeros(x.shape[:2], dtype=torch.bool)
    return functional_call(model, params, (x, state), {"reset": reset})


@pytest.mark.parametrize(("steps", "chunk"), [(1, 32), (20, 32), (32, 32), (5, 8)])
def test_model_one_chunk_path_equals_chunked_path_to_second_order(steps: int, chunk: int) -> None:
    """Outputs, final state, gradients and a Hessian-vector product from a non-zero state, float64."""
    model = _model(chunk)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    x = torch.randn(3, steps, IN, dtype=torch.float64)
    state = tuple(torch.randn(s.shape, dtype=torch.float64) for s in model.init_state(3))
    directions = {k: torch.randn_like(v) for k, v in params.items()}
    results = []
    for one_chunk in (True, False):
        y, new_state = _run(model, params, x, state, one_chunk)
        loss = y.square().sum() + sum(s.square().sum() for s in new_state)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        dot = sum((g * directions[k]).sum() for k, g in zip(params, grads, strict=True))
        hvp = torch.autograd.grad(dot, list(params.values()))
        results.append((y.detach(), [s.detach() for s in new_state], [g.detach() for g in grads], list(hvp)))
    (y1, s1, g1, h1), (y2, s2, g2, h2) = results
    assert max_abs_error(y1, y2) <= 1e-10
    assert max_abs_error(s1, s2) <= 1e-10
    assert max_abs_error(g1, g2) <= 1e-9
    assert max_abs_error(h1, h2) <= 1e-8
    assert any(h.abs().sum() > 0 for h in h1)


def test_model_one_chunk_path_under_vmapped_maml_second_order_equals_chunked_path() -> None:
    """MAML's vectorised form: vmap over tasks of an inner torch.func.grad step and a query loss,
    then the outer autograd gradient; the one-chunk and the chunked path agree (float64)."""
    model = _model()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    tasks = 3
    sx, qx = torch.randn(tasks, 2, 20, IN, dtype=torch.float64), torch.randn(tasks, 2, 20, IN, dtype=torch.float64)
    sy, qy = torch.randn(tasks, 2, 20, OUT, dtype=torch.float64), torch.randn(tasks, 2, 20, OUT, dtype=torch.float64)
    zero = tuple(s.expand(tasks, *s.shape).clone() for s in model.init_state(2))

    def meta_gradients(one_chunk: bool) -> list[torch.Tensor]:
        def task_loss(w, sx, sy, qx, qy, s0):  # type: ignore[no-untyped-def]
            support = lambda w: (_run(model, w, sx, s0, one_chunk)[0] - sy).square().mean()  # noqa: E731
            grads = torch.func.grad(support)(w)
            fast = {k: w[k] - 0.1 * grads[k] for k in w}
            return (_run(model, fast, qx, s0, one_chunk)[0] - qy).square().mean()

        losses = vmap(task_loss, in_dims=(None, 0, 0, 0, 0, 0))(params, sx, sy, qx, qy, zero)
        return list(torch.autograd.grad(losses.mean(), list(params.values())))

    one, chunked = meta_gradients(True), meta_gradients(False)
    assert max_abs_error(one, chunked) <= 1e-9
    assert all(g.abs().sum() > 0 for g in one)


def test_model_one_chunk_path_float32_equals_naive_steps() -> None:
    """float32 at the quick suite's size: one pass against the same sequence step by step."""
    torch.manual_seed(1)
    model = SSM(SSMConfig(input_dim=IN, output_dim=OUT, hidden_dim=44, state_dim=32))
    x = torch.randn(4, 25, IN)
    state = tuple(torch.randn(s.shape) for s in model.init_state(4))
    y, final = model(x, state)
    s, ys = state, []
    for t in range(x.shape[1]):
        y_t, s = model._differentiable_step(x[:, t], s)
        ys.append(y_t)
    assert max_abs_error(y, torch.stack(ys, 1)) <= 1e-5
    assert max_abs_error(final, s) <= 1e-5
