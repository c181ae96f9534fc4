"""The ``ssm`` model and its scans against naive step-by-step references written here.

The references use complex dtypes and a Python loop over time, independently of the real-valued
chunked implementation in models/kernels/scan.py and models/ssm.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from models import ssm as ssm_module
from models.kernels import scan
from models.kernels.scan import chunked_scan, diagonal_scan, from_chunks, linear_scan, to_chunks
from models.ssm import SSM, SSMConfig

IN, OUT, WIDTH, STATES = 5, 3, 12, 6


def _model(seed: int = 0, **config: object) -> SSM:
    torch.manual_seed(seed)
    cfg = SSMConfig(input_dim=IN, output_dim=OUT, hidden_dim=WIDTH, state_dim=STATES, **config)  # type: ignore[arg-type]
    return SSM(cfg).eval()


def _loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t, one step at a time; a, b (B, T, ...), h0 (B, ...)."""
    h, out = h0, []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


# ---- scans -----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 7, 64, 100])
def test_linear_scan_equals_loop_with_zero_multipliers(steps: int) -> None:
    a = torch.randn(3, steps, 4, dtype=torch.complex128)
    a[torch.rand(3, steps, 4) < 0.2] = 0  # a_t = 0 cuts the history (the reset operator)
    b = torch.randn(3, steps, 4, dtype=torch.complex128)
    h0 = torch.randn(3, 4, dtype=torch.complex128)
    torch.testing.assert_close(linear_scan(a, b, h0), _loop(a, b, h0), atol=1e-12, rtol=0)
    torch.testing.assert_close(linear_scan(a, b), _loop(a, b, torch.zeros_like(h0)), atol=1e-12, rtol=0)


def test_linear_scan_fp32_complex_and_real() -> None:
    a = torch.randn(2, 50, 3, dtype=torch.complex64) * 0.9
    a[:, 10] = 0
    b = torch.randn(2, 50, 3, dtype=torch.complex64)
    h0 = torch.randn(2, 3, dtype=torch.complex64)
    torch.testing.assert_close(linear_scan(a, b, h0), _loop(a, b, h0), atol=1e-5, rtol=0)
    ar, br, h0r = a.real.contiguous(), b.real.contiguous(), h0.real.contiguous()
    torch.testing.assert_close(linear_scan(ar, br, h0r), _loop(ar, br, h0r), atol=1e-5, rtol=0)


def test_linear_scan_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"a and b expected the same shape.*\(2, 5, 3\) and \(2, 4, 3\)"):
        linear_scan(torch.randn(2, 5, 3), torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"h0 expected shape \(2, 3\), got \(2, 4\)"):
        linear_scan(torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.randn(2, 4))


def _diag_reference(log_mag, phase, x, h0, reset):
    """The diagonal recurrence with complex numbers and a loop; x (N, 2, B, T), h0 (N, 2, B)."""
    lam = torch.polar(torch.exp(log_mag), phase)  # (N,)
    b = torch.complex(x[:, 0], x[:, 1]).permute(1, 2, 0)  # (B, T, N)
    a = lam.expand_as(b).clone()
    if reset is not None:
        a[reset] = 0  # Lu et al. 2023: a_t := 0 where the episode restarts
    h = _loop(a, b, torch.complex(h0[:, 0], h0[:, 1]).T)  # (B, T, N)
    return torch.stack([h.real, h.imag], dim=1).permute(3, 1, 0, 2)  # (N, 2, B, T)


# chunked_scan's two within-chunk products: the real Toeplitz form and the rotated one.
_PATHS = {"real": 0.0, "rotated": 1e9}


def _take_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setattr(scan, "_ROTATE_MAX_ROWS_PER_STEP", _PATHS[path])
    monkeypatch.setattr(scan, "_ROTATE_WITHOUT_TRANSFORMS", True)


@pytest.mark.parametrize("path", sorted(_PATHS))
@pytest.mark.parametrize("with_reset", [False, True])
@pytest.mark.parametrize(("steps", "chunk"), [(1, 4), (9, 4), (37, 4), (100, 8), (300, 3), (64, 64)])
def test_diagonal_scan_equals_loop(
    steps: int, chunk: int, with_reset: bool, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _take_path(monkeypatch, path)
    torch.manual_seed(steps)
    n, batch = 5, 3
    log_mag = -torch.rand(n, dtype=torch.float64) * 2 - 1e-3
    phase = torch.rand(n, dtype=torch.float64) * 2 * math.pi
    x = torch.randn(n, 2, batch, steps, dtype=torch.float64)
    h0 = torch.randn(n, 2, batch, dtype=torch.float64)
    reset = None
    if with_reset:
        reset = torch.rand(batch, steps) < 0.15
        reset[0, 0] = True
        reset[1, -1] = True
        reset[2, :] = False
    out = diagonal_scan(log_mag, phase, x, h0, reset, chunk)
    torch.testing.assert_close(out, _diag_reference(log_mag, phase, x, h0, reset), atol=1e-10, rtol=0)


def test_scan_paths_agree_in_first_and_second_derivatives(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotated and the real Toeplitz product give the same gradients, and the same gradient
    of a gradient (MAML's second order flows through the scan), in float64."""
    torch.manual_seed(3)
    n, batch, steps = 4, 3, 21
    inputs = (
        -torch.rand(n, dtype=torch.float64) - 1e-3,
        torch.rand(n, dtype=torch.float64) * 2 * math.pi,
        torch.randn(n, 2, batch, steps, dtype=torch.float64),
        torch.randn(n, 2, batch, dtype=torch.float64),
    )
    reset = torch.rand(batch, steps) < 0.2
    weight = torch.randn(n, 2, batch, steps, dtype=torch.float64)
    results = []
    for path in _PATHS:
        _take_path(monkeypatch, path)
        leaves = [t.clone().requires_grad_() for t in inputs]
        loss = (diagonal_scan(*leaves, reset=reset, chunk=8) * weight).sum()
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in grads), leaves)
        results.append([t.detach() for t in (loss, *grads, *second)])
    for real, rotated in zip(*results, strict=True):
        torch.testing.assert_close(rotated, real, atol=1e-9, rtol=1e-9)


def test_chunked_scan_layout_round_trip_and_fp32_accuracy() -> None:
    n, batch, size, chunks = 4, 2, 8, 16
    x = torch.randn(n, 2, batch, size * chunks)
    torch.testing.assert_close(from_chunks(to_chunks(x, size)), x, atol=0, rtol=0)
    assert to_chunks(x, size)[..., 3, 1, 5].equal(x[..., 1, 5 * size + 3])  # step c * C + s sits at [s, b, c]
    with pytest.raises(ValueError, match=r"size expected a positive divisor of T = 128, got 7"):
        to_chunks(x, 7)
    log_mag, phase = -torch.rand(n) * 0.05 - 1e-3, torch.rand(n) * 6
    h0 = torch.randn(n, 2, batch)
    reset = torch.rand(batch, size * chunks) < 0.05
    out = from_chunks(chunked_scan(log_mag, phase, to_chunks(x, size), h0, to_chunks(reset, size)))
    ref = _diag_reference(log_mag.double(), phase.double(), x.double(), h0.double(), reset)
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-5)  # long memory: |h| ~ 10


def test_fp32_scan_keeps_the_phase_over_long_sequences() -> None:
    """T = 4096 with |lambda| up to 0.9999: k * arg(lambda) reaches thousands of radians at the upper
    levels of the scan; the float32 result must stay within 2e-6 of the state scale of the float64 loop."""
    n, batch, steps = 8, 2, 4096
    log_mag = torch.log(torch.empty(n).uniform_(0.99, 0.9999))
    phase = torch.rand(n) * 2 * math.pi
    x, h0 = torch.randn(n, 2, batch, steps), torch.randn(n, 2, batch)
    out = diagonal_scan(log_mag, phase, x, h0, None, 32).double()
    ref = _diag_reference(log_mag.double(), phase.double(), x.double(), h0.double(), None)
    assert (out - ref).abs().max() <= 2e-6 * ref.abs().max()


def test_diagonal_scan_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"x expected shape \(N, 2, B, T\), got \(3, 3, 2, 5\)"):
        diagonal_scan(torch.zeros(3), torch.zeros(3), torch.zeros(3, 3, 2, 5), torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=r"reset expected shape \(2, 5\), got \(2, 4\)"):
        diagonal_scan(
            torch.zeros(3),
            torch.zeros(3),
            torch.zeros(3, 2, 2, 5),
            torch.zeros(3, 2, 2),
            torch.zeros(2, 4, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match=r"chunk expected an int >= 2, got 1"):
        diagonal_scan(torch.zeros(3), torch.zeros(3), torch.zeros(3, 2, 2, 5), torch.zeros(3, 2, 2), chunk=1)
    with pytest.raises(ValueError, match=r"h0 \(3, 2, 2\).*got .*\(3, 2\)"):
        diagonal_scan(torch.zeros(3), torch.zeros(3), torch.zeros(3, 2, 2, 5), torch.zeros(3, 2))


# ---- the model against a naive reference -----------------------------------------------------


def _naive_model(model: SSM, x: torch.Tensor, state, reset: torch.Tensor | None):
    """The SSM written as the equations of models/ssm.py, complex dtype, a loop over time."""
    p = dict(model.named_parameters())
    steps = x.shape[1]
    hidden = F.linear(x, p["encoder.weight"], p["encoder.bias"])  # (B, T, H)
    final = []
    for i, h_init in enumerate(state):
        q = f"blocks.{i}."
        z = F.layer_norm(hidden, (WIDTH,), p[q + "norm.weight"], p[q + "norm.bias"])
        nu, theta = p[q + "recurrence.nu_log"], p[q + "recurrence.theta_log"]
        lam = torch.exp(torch.complex(-(torch.exp(nu) + 1e-6), torch.exp(theta)))  # (N,)
        gamma = torch.exp(p[q + "recurrence.gamma_log"])
        B = torch.complex(p[q + "recurrence.B"][:, 0], p[q + "recurrence.B"][:, 1]) * gamma[:, None]  # (N, H)
        C = torch.complex(p[q + "recurrence.C"][..., 0], p[q + "recurrence.C"][..., 1])  # (H, N)
        h = torch.complex(h_init[..., 0], h_init[..., 1])  # (B, N)
        outs = []
        for t in range(steps):
            if reset is not None:
                h = torch.where(reset[:, t, None], torch.zeros_like(h), h)
            h = lam * h + z[:, t].to(B.dtype) @ B.T
            outs.append((h @ C.T).real + p[q + "recurrence.D"] * z[:, t])
        final.append(torch.stack([h.real, h.imag], dim=-1))
        v = F.gelu(torch.stack(outs, dim=1))
        a = F.linear(v, p[q + "glu_value.weight"], p[q + "glu_value.bias"])
        g = F.linear(v, p[q + "glu_gate.weight"], p[q + "glu_gate.bias"])
        hidden = hidden + a * torch.sigmoid(g)
    return F.linear(hidden, p["head.weight"], p["head.bias"]), tuple(final)


@pytest.mark.parametrize("with_reset", [False, True])
@pytest.mark.parametrize(("steps", "chunk"), [(5, 32), (40, 8), (70, 4)])
def test_sequence_equals_naive_reference_from_nonzero_state(steps: int, chunk: int, with_reset: bool) -> None:
    model = _model(chunk_size=chunk)
    _, warm = model(torch.randn(3, 11, IN), model.init_state(3))
    assert all(s.abs().sum() > 0 for s in warm)
    x = torch.randn(3, steps, IN)
    reset = None
    if with_reset:
        reset = torch.zeros(3, steps, dtype=torch.bool)
        reset[0, steps // 2] = True
        reset[1, 0] = True
        reset[2, 1::3] = True
    y, state = model(x, warm, reset=reset)
    y_ref, state_ref = _naive_model(model, x, warm, reset)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    for s, s_ref in zip(state, state_ref, strict=True):
        torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("with_reset", [False, True])
def test_segmented_sequence_equals_one_pass(with_reset: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long sequences run in segments with the state carried: outputs, final state and gradients
    equal one pass over the whole sequence."""
    model = _model(seed=4, chunk_size=4).double()
    torch.manual_seed(5)
    x = torch.randn(3, 50, model.config.input_dim, dtype=torch.float64)
    state = tuple(torch.randn_like(s) for s in model.init_state(3))
    reset = torch.rand(3, 50) < 0.1 if with_reset else None
    results = []
    for tokens in (10**9, 3 * 8):  # one pass; segments of 8 steps (the last one shorter)
        monkeypatch.setattr(ssm_module, "_SEGMENT_TOKENS", tokens)
        model.zero_grad()
        y, new_state = model(x, state, reset)
        (y.square().mean() + sum(s.square().sum() for s in new_state)).backward()
        results.append([y.detach(), *new_state, *(p.grad.clone() for p in model.parameters())])
    for one, segmented in zip(*results, strict=True):
        torch.testing.assert_close(segmented, one, atol=1e-10, rtol=1e-10)


def test_chunk_size_changes_speed_only() -> None:
    x = torch.randn(2, 90, IN)
    a, b = _model(seed=1, chunk_size=4), _model(seed=1, chunk_size=64)
    ya, sa = a(x, a.init_state(2))
    yb, sb = b(x, b.init_state(2))
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=0)
    for u, v in zip(sa, sb, strict=True):
        torch.testing.assert_close(u, v, atol=1e-5, rtol=0)


# ---- parametrisation -------------------------------------------------------------------------


def _magnitudes(model: SSM) -> torch.Tensor:
    return torch.cat([torch.exp(block.recurrence.decay()[0]) for block in model.blocks])


def test_ring_initialisation() -> None:
    model = _model(r_min=0.6, r_max=0.95)
    mag = _magnitudes(model)
    assert mag.min() >= 0.6 - 1e-5 and mag.max() <= 0.95 + 1e-5
    gamma = torch.cat([torch.exp(b.recurrence.gamma_log) for b in model.blocks])
    torch.testing.assert_close(gamma, torch.sqrt(1 - mag.detach() ** 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_lambda_stays_inside_unit_disc_after_a_huge_step(direction: float) -> None:
    model = _model().train()
    assert (_magnitudes(model) < 1).all()
    # Push every |lambda| towards 1 (direction 1) or towards 0 (direction -1) with a huge step.
    (direction * _magnitudes(model).sum()).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p += 1e6 * p.grad
    mag = _magnitudes(model)
    assert torch.isfinite(mag).all()
    assert (mag < 1).all(), mag.max()
    y, s = model(torch.randn(2, 300, IN), model.init_state(2))
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in s)


def test_long_sequence_is_finite_and_continuable() -> None:
    model = _model(r_max=0.999)
    x = torch.randn(2, 4096, IN)
    y, s = model(x, model.init_state(2))
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in s)
    y1, s1 = model(x[:, :2500], model.init_state(2))
    y2, _ = model(x[:, 2500:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-4, rtol=1e-5)


# ---- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("chunk", "with_reset"), [(4, True), (32, False)])
def test_second_order_meta_gradient_equals_finite_differences(chunk: int, with_reset: bool) -> None:
    """MAML's meta-gradient through one inner step (double backward through the scan: the
    chunked one with a reset, or the one-chunk path), against central differences of the outer
    loss in float64."""
    model = _model(chunk_size=chunk).double().train()
    names = [k for k, _ in model.named_parameters()]
    x, target = (
        torch.randn(2, 19, IN, dtype=torch.float64),
        torch.randn(2, 19, OUT, dtype=torch.float64),
    )
    reset: torch.Tensor | None = None
    if with_reset:
        reset = torch.zeros(2, 19, dtype=torch.bool)
        reset[0, 6] = reset[1, 13] = True
    _, state = model(torch.randn(2, 5, IN, dtype=torch.float64), model.init_state(2))
    state = tuple(s.detach() for s in state)

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        y, _ = functional_call(model, p, (x, state), {"reset": reset})
        return (y - target).pow(2).mean()

    def outer(p: dict[str, torch.Tensor], create_graph: bool) -> torch.Tensor:
        inner = torch.autograd.grad(loss(p), [p[k] for k in names], create_graph=create_graph)
        return loss({k: p[k] - 0.5 * g for k, g in zip(names, inner, strict=True)})

    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    meta = torch.autograd.grad(outer(params, True), [params[k] for k in names])
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    eps = 1e-5

    def shifted(sign: float) -> dict[str, torch.Tensor]:
        return {k: (v + sign * eps * direction[k]).detach().requires_grad_() for k, v in params.items()}

    numeric = (outer(shifted(1.0), False) - outer(shifted(-1.0), False)).item() / (2 * eps)
    analytic = sum((g * direction[k]).sum() for k, g in zip(names, meta, strict=True)).item()
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)
    # The second-order term matters: the first-order meta-gradient differs.
    first = {k: v.detach().requires_grad_() for k, v in params.items()}
    inner = torch.autograd.grad(loss(first), [first[k] for k in names])
    fast = {k: (first[k] - 0.5 * g).detach().requires_grad_() for k, g in zip(names, inner, strict=True)}
    fo = torch.autograd.grad(loss(fast), [fast[k] for k in names])
    first_order = sum((g * direction[k]).sum() for k, g in zip(names, fo, strict=True)).item()
    assert abs(first_order - analytic) > 1e-4 * abs(analytic)


def test_vmap_over_tasks_with_reset_equals_per_task_calls() -> None:
    model = _model(chunk_size=4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tasks = 3
    stacked = {k: torch.stack([v * (1 + 0.05 * i) for i in range(tasks)]) for k, v in params.items()}
    xs = torch.randn(tasks, 2, 15, IN)
    resets = torch.rand(tasks, 2, 15) < 0.2
    states = tuple(torch.randn(tasks, 2, STATES, 2) for _ in model.blocks)

    def run(p, x, s, r):
        return functional_call(model, p, (x, s), {"reset": r})

    ys, ss = torch.func.vmap(run)(stacked, xs, states, resets)
    for i in range(tasks):
        y, s = run({k: v[i] for k, v in stacked.items()}, xs[i], tuple(t[i] for t in states), resets[i])
        torch.testing.assert_close(ys[i], y, atol=1e-5, rtol=0)
        for a, b in zip(ss, s, strict=True):
            torch.testing.assert_close(a[i], b, atol=1e-5, rtol=0)


def test_training_reduces_loss_on_a_memory_task() -> None:
    """Recall the first input of a sequence at every later step: a task that needs the state."""
    torch.manual_seed(0)
    model = SSM(SSMConfig(input_dim=1, output_dim=1, hidden_dim=16, state_dim=8, r_min=0.9, r_max=0.999))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.randn(16, 1, 1)
        x = torch.cat([first, torch.zeros(16, 29, 1)], dim=1)
        return x, first.expand(16, 30, 1)

    def loss() -> torch.Tensor:
        x, y = batch()
        return (model(x, model.init_state(16))[0][:, 5:] - y[:, 5:]).pow(2).mean()

    with torch.no_grad():
        before = sum(loss().item() for _ in range(5)) / 5
    for _ in range(80):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = sum(loss().item() for _ in range(5)) / 5
    assert after < 0.2 * before, (before, after)


# ---- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("state_dim", 0, r"state_dim: expected a positive int, got 0"),
        ("num_layers", 1.5, r"num_layers: expected a positive int, got 1.5"),
        ("chunk_size", 1, r"chunk_size: expected an int >= 2, got 1"),
        ("r_max", 1.0, r"r_min, r_max: expected 0 <= r_min < r_max < 1, got r_min=0.4, r_max=1.0"),
        ("max_phase", 0.0, r"max_phase: expected a value in \(0, 2 pi\], got 0.0"),
    ],
)
def test_config_errors_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SSMConfig(input_dim=IN, output_dim=OUT, **{field: value})  # type: ignore[arg-type]
