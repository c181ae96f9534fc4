"""``models.kernels.two_level_scan.two_level_scan`` (the SSM's path for MAML's short windows) and ``block_shape``.

The scan against a step-by-step complex loop written here, for every block shape, from a non-zero
state, in float64 and float32; its errors; and the model's block-major path against the same
model run one step at a time. ``one_chunk_scan``, which is ``two_level_scan`` in natural layout,
is checked in test_ssm_one_chunk.py (loop, derivatives to second order, vmap).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, vmap

from models.kernels.two_level_scan import block_shape, two_level_scan
from models.ssm import SSM, SSMConfig
from tests.models.pytree_error import max_abs_error
from tests.models.scan_reference import complex_loop


def _to_blocks(x: torch.Tensor, size: int, blocks: int) -> torch.Tensor:
    """(N, 2, B, C * blocks) time-ordered -> (N, 2, C, blocks, B), step j * C + s at [s, j]."""
    n, _, batch, _ = x.shape
    return x.reshape(n, 2, batch, blocks, size).permute(0, 1, 4, 3, 2)


def _inputs(n: int, batch: int, steps: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return (
        (-torch.rand(n, generator=gen, dtype=torch.float64) * 3 - 1e-4).to(dtype),
        (torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi).to(dtype),
        torch.randn(n, 2, batch, steps, generator=gen, dtype=torch.float64).to(dtype),
        torch.randn(n, 2, batch, generator=gen, dtype=torch.float64).to(dtype),
    )


@pytest.mark.parametrize(("size", "blocks"), [(1, 1), (5, 1), (1, 6), (5, 5), (3, 4), (7, 2)])
@pytest.mark.parametrize("batch", [1, 3])
def test_two_level_scan_equals_loop(size: int, blocks: int, batch: int) -> None:
    log_mag, phase, x, h0 = _inputs(4, batch, size * blocks, seed=size * 10 + blocks)
    out = two_level_scan(log_mag, phase, _to_blocks(x, size, blocks), h0)
    assert out.shape == (4, 2, size, blocks, batch)
    torch.testing.assert_close(out, _to_blocks(complex_loop(log_mag, phase, x, h0), size, blocks), atol=1e-12, rtol=0)


def test_two_level_scan_float32_keeps_the_phase() -> None:
    """|lambda| near 1 and phases up to 6 pi per step over 36 steps (6 x 6 blocks, lambda^30 at the
    upper level), float32 against the float64 loop of the same float32 inputs."""
    log_mag, phase, x, h0 = _inputs(8, 2, 36, seed=3, dtype=torch.float32)
    log_mag = torch.log(torch.empty(8, dtype=torch.float64).uniform_(0.99, 0.9999)).float()
    phase = phase * 3
    out = two_level_scan(log_mag, phase, _to_blocks(x, 6, 6), h0).double()
    ref = _to_blocks(complex_loop(log_mag.double(), phase.double(), x.double(), h0.double()), 6, 6)
    assert (out - ref).abs().max() <= 2e-6 * ref.abs().max()


def test_two_level_scan_with_tiny_magnitudes_stays_finite_and_exact() -> None:
    """log|lambda| down to -30 (the model's floor): powers underflow to zero, nothing overflows."""
    log_mag, phase, x, h0 = _inputs(3, 2, 25, seed=5)
    log_mag = torch.tensor([-30.0, -5.0, -1e-6], dtype=torch.float64)
    out = two_level_scan(log_mag, phase, _to_blocks(x, 5, 5), h0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _to_blocks(complex_loop(log_mag, phase, x, h0), 5, 5), atol=1e-12, rtol=0)


def test_two_level_scan_under_vmap_and_grad_equals_per_sample() -> None:
    """MAML's form: torch.func.grad inside vmap, with every input batched, against autograd per sample."""
    samples = [_inputs(3, 2, 12, seed=s) for s in range(3)]
    samples = [(lm, ph, _to_blocks(x, 4, 3), h0) for lm, ph, x, h0 in samples]
    stacked = [torch.stack(parts) for parts in zip(*samples, strict=True)]

    def loss(log_mag: torch.Tensor, phase: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return two_level_scan(log_mag, phase, x, h0).square().sum()

    grads = vmap(torch.func.grad(loss, argnums=(0, 1, 2, 3)))(*stacked)
    for i, sample in enumerate(samples):
        leaves = [t.clone().requires_grad_() for t in sample]
        expected = torch.autograd.grad(loss(*leaves), leaves)
        for g, e in zip(grads, expected, strict=True):
            torch.testing.assert_close(g[i], e, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("steps", "expected"), [(1, (1, 1)), (2, (1, 2)), (5, (2, 3)), (20, (4, 5)), (25, (5, 5)), (32, (6, 6))]
)
def test_block_shape(steps: int, expected: tuple[int, int]) -> None:
    assert block_shape(steps) == expected


def test_block_shape_covers_every_length_with_fewer_padded_steps_than_blocks() -> None:
    for steps in range(1, 200):
        size, blocks = block_shape(steps)
        assert blocks == math.ceil(math.sqrt(steps))
        assert 0 <= size * blocks - steps < blocks


def test_block_shape_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match=r"block_shape: steps expected a positive int, got 0"):
        block_shape(0)


def test_two_level_scan_rejects_bad_shapes() -> None:
    z = torch.zeros
    with pytest.raises(
        ValueError, match=r"two_level_scan: x expected shape \(N, 2, C, blocks, B\), got \(3, 2, 5, 2\)"
    ):
        two_level_scan(z(3), z(3), z(3, 2, 5, 2), z(3, 2, 2))
    with pytest.raises(ValueError, match=r"two_level_scan: x expected .*got \(3, 3, 5, 2, 2\)"):
        two_level_scan(z(3), z(3), z(3, 3, 5, 2, 2), z(3, 2, 2))
    with pytest.raises(ValueError, match=r"h0 \(3, 2, 2\); got .*\(3, 2\)"):
        two_level_scan(z(3), z(3), z(3, 2, 5, 2, 2), z(3, 2))
    with pytest.raises(ValueError, match=r"log_mag, phase \(3,\).*got \(4,\)"):
        two_level_scan(z(4), z(3), z(3, 2, 5, 2, 2), z(3, 2, 2))


@pytest.mark.parametrize("steps", [7, 25])
def test_model_block_major_path_equals_steps_under_vmap(steps: int) -> None:
    """The model's T <= chunk path (block-major tokens, padded to 3 x 3 for T = 7) under vmap over
    tasks, which switches to its transform-time ops (products and sums, F.gelu), against each
    task run one step at a time outside any transform (float64)."""
    torch.manual_seed(2)
    model = SSM(SSMConfig(input_dim=4, output_dim=3, hidden_dim=10, state_dim=6)).double()
    params = dict(model.named_parameters())
    x = torch.randn(3, 2, steps, 4, dtype=torch.float64)
    state = tuple(torch.randn(3, *s.shape, dtype=torch.float64) for s in model.init_state(2))
    y, final = vmap(lambda xi, si: functional_call(model, params, (xi, si)))(x, state)
    for task in range(3):
        s = tuple(t[task] for t in state)
        steps_out = []
        for t in range(steps):
            y_t, s = model(x[task, :, t], s)
            steps_out.append(y_t)
        assert max_abs_error(y[task], torch.stack(steps_out, 1)) <= 1e-12
        assert max_abs_error(tuple(t[task] for t in final), s) <= 1e-12
