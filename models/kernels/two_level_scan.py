"""The two-level block scan: all states of h_t = lambda h_{t-1} + x_t for a short sequence.

For a sequence of at most one chunk without resets (MAML's windows), time is split into blocks
of about sqrt(T) steps, held block-major (step t = j C + s at [s, j]). The states within each
block, the states entering the blocks and their lift into every step are three small batched
products with real forms of complex matrices, all built by one product of the powers lambda^k
with a constant selection matrix: few ops, which is what counts under ``torch.func.vmap``.
``one_chunk_scan`` is the same scan for time-ordered x (N, 2, B, T).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for the phase tables of the low-precision float dtypes, else ``dtype`` itself: k arg(lambda)
    reaches thousands of radians, where float32 would lose the phase."""
    return torch.float64 if dtype in (torch.float16, torch.bfloat16, torch.float32) else dtype


def block_shape(steps: int) -> tuple[int, int]:
    """(C, blocks) for ``two_level_scan`` of ``steps`` steps: about sqrt(T) each, C * blocks >= T,
    the fewest padded steps for that many blocks (25 steps: 5 x 5; 32: 6 x 6 with 4 padded)."""
    if steps < 1:
        raise ValueError(f"block_shape: steps expected a positive int, got {steps!r}")
    blocks = math.isqrt(steps - 1) + 1  # ceil(sqrt(T))
    return -(-steps // blocks), blocks


def two_level_scan(log_mag: Tensor, phase: Tensor, x: Tensor, h0: Tensor) -> Tensor:
    """States of h_t = lambda h_{t-1} + x_t for a short sequence in blocks, without resets.

    Step t = j * C + s of row b sits at [:, :, s, j, b] (block-major: position in the block, block,
    row). Two levels of the recurrence, each a batched product with the real form
    [[Re A, -Im A], [Im A, Re A]] of a small complex matrix A:

        G_j[s]  = sum_{s' <= s} lambda^(s - s') x_j[s']             (within each block, 2C x 2C)
        H_j     = sum_{i < j} lambda^(C (j-1-i)) G_i[C-1] + lambda^(C j) h0   (state entering block j)
        h_j[s]  = G_j[s] + lambda^(s + 1) H_j                        (2C x 2 lift)

    (H_j for all j is one 2nb x 2(nb + 1) product with the block ends and h0 side by side.)

    The three matrices are one product of the powers lambda^k (k = 0..C and multiples of C, computed
    in float64 as in ``lambda_powers``, then cast) with a constant 0 / +-1 selection matrix, so
    building them is a handful of small ops whatever C is: no gather, no triangular mask, no
    elementwise work on (C, C) grids. Why this layout: under ``torch.func.vmap`` (MAML's tasks) a
    batched matmul costs little more than its arithmetic, while broadcast elementwise ops on
    batched tensors and large per-task matrices are what cost. Work is O(T (C + blocks)) per
    channel and row.

    Args:
        log_mag, phase: log |lambda| and arg(lambda), each (N,).
        x: inputs as (real, imaginary) planes, (N, 2, C, blocks, B).
        h0: the state before step 0, (N, 2, B).

    Returns:
        h: (N, 2, C, blocks, B), the state after each step.
    """
    if x.dim() != 5 or x.shape[1] != 2:
        raise ValueError(f"two_level_scan: x expected shape (N, 2, C, blocks, B), got {tuple(x.shape)}")
    n, _, size, blocks, batch = x.shape
    if log_mag.shape != (n,) or phase.shape != (n,) or h0.shape != (n, 2, batch):
        raise ValueError(
            f"two_level_scan: expected log_mag, phase ({n},), h0 ({n}, 2, {batch}); "
            f"got {tuple(log_mag.shape)}, {tuple(phase.shape)}, {tuple(h0.shape)}"
        )
    dtype, wide = log_mag.dtype, wide_dtype(log_mag.dtype)
    powers, shift, select = _two_level_tables(size, blocks, dtype, log_mag.device)
    # (Re, Im) of lambda^k side by side, (N, 2K): Im as cos(angle - pi / 2), one cos for both.
    mag = torch.exp(log_mag.to(wide).unsqueeze(1) * powers)
    parts = (mag * torch.cos(torch.addcmul(shift, phase.to(wide).unsqueeze(1), powers))).to(dtype)
    within, lift, across = (parts @ select).split(_two_level_sizes(size, blocks), dim=1)
    rows = blocks * batch
    g = torch.bmm(within.view(n, 2 * size, 2 * size), x.reshape(n, 2 * size, rows))  # (N, 2C, rows)
    if blocks > 1:
        # The block ends G_j[C-1] and h0 side by side, (N, 2, blocks + 1, B): one product gives H.
        ends = torch.cat([g.view(n, 2, size, blocks, batch)[:, :, -1], h0.unsqueeze(2)], dim=2)
        h_in = torch.bmm(across.view(n, 2 * blocks, 2 * blocks + 2), ends.view(n, 2 * blocks + 2, batch))
        h_in = h_in.view(n, 2, rows)
    else:
        h_in = h0
    # bmm and add rather than baddbmm: under vmap baddbmm is bmm, a product with beta and an add.
    h = g + torch.bmm(lift.view(n, 2 * size, 2), h_in)
    return h.view(n, 2, size, blocks, batch)


def _two_level_sizes(size: int, blocks: int) -> list[int]:
    """Entries of ``two_level_scan``'s three real matrices: within blocks 2C x 2C, lift 2C x 2,
    across blocks 2nb x 2(nb + 1) (the last column pair takes h0)."""
    return [4 * size * size, 4 * size, 4 * blocks * (blocks + 1)]


_TWO_LEVEL: dict[tuple[int, int, torch.dtype, torch.device], tuple[Tensor, Tensor, Tensor]] = {}


def _two_level_tables(
    size: int, blocks: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """The constants of ``two_level_scan``, made once per (C, blocks, dtype, device).

    Returns:
        powers: the exponents k twice over, (2K,), in ``wide_dtype(dtype)`` (float64 up to float32).
        shift: 0 for the first K, -pi / 2 for the second (cos(k phi - pi / 2) = sin(k phi)).
        select: (2K, entries) in ``dtype``: (Re, Im)(lambda^k) @ select gives the three matrices,
            flattened row-major and side by side.
    """
    key = (size, blocks, dtype, device)
    found = _TWO_LEVEL.get(key)
    if found is not None:
        return found
    wide = wide_dtype(dtype)
    exponents = sorted({*range(size + 1), *(size * j for j in range(blocks))})
    where = {k: i for i, k in enumerate(exponents)}
    count = len(exponents)

    def real_form(rows: int, cols: int, power: Callable[[int, int], int | None]) -> Tensor:
        """Selection for the real form of the (rows, cols) complex matrix A[r, q] = lambda^power(r, q)."""
        sel = torch.zeros(2 * count, 2, rows, 2, cols, dtype=torch.float64)
        for r in range(rows):
            for q in range(cols):
                k = power(r, q)
                if k is None:
                    continue
                i = where[k]
                sel[i, 0, r, 0, q] = sel[i, 1, r, 1, q] = 1.0  # Re A on the diagonal blocks
                sel[count + i, 0, r, 1, q] = -1.0  # -Im A above
                sel[count + i, 1, r, 0, q] = 1.0  # Im A below
        return sel.reshape(2 * count, -1)

    def across(j: int, i: int) -> int | None:
        """H_j's power of block i's end (i < blocks) or of h0 (i = blocks)."""
        return size * j if i == blocks else size * (j - 1 - i) if i < j else None

    with torch.inference_mode(False):  # usable outside inference mode, whoever asks first
        select = torch.cat(
            [
                real_form(size, size, lambda t, s: t - s if t >= s else None),
                real_form(size, 1, lambda t, _: t + 1),
                real_form(blocks, blocks + 1, across),
            ],
            dim=1,
        )
        half = torch.tensor(exponents, dtype=wide)
        made = (
            torch.cat([half, half]).to(device),
            torch.cat([torch.zeros(count, dtype=wide), torch.full((count,), -math.pi / 2, dtype=wide)]).to(device),
            select.to(dtype=dtype, device=device),
        )
    if all(type(t) is Tensor for t in made):  # not a tracing mode's fake tensors
        _TWO_LEVEL[key] = made
    return made


def one_chunk_scan(log_mag: Tensor, phase: Tensor, x: Tensor, h0: Tensor) -> Tensor:
    """States of h_t = lambda h_{t-1} + x_t, lambda = exp(log_mag + i phase), for T up to a chunk.

    ``two_level_scan`` on x in natural (time-last) layout: time is split into the blocks of
    ``block_shape(T)`` (zero-padded at the end, which cannot change earlier states) and moved to
    the block-major layout and back, one copy each way. Work is O(T sqrt(T)) per channel. A model
    that can keep its tokens block-major calls ``two_level_scan`` directly and skips both copies.

    Args:
        log_mag, phase: log |lambda| and arg(lambda), each (N,).
        x: inputs as (real, imaginary) planes, (N, 2, B, T), time last.
        h0: the state before step 0, (N, 2, B).

    Returns:
        h: (N, 2, B, T), the state after each step.
    """
    n, two, batch, steps = x.shape
    if two != 2 or log_mag.shape != (n,) or phase.shape != (n,) or h0.shape != (n, 2, batch):
        raise ValueError(
            f"one_chunk_scan: expected log_mag, phase ({n},), x (N, 2, B, T), h0 ({n}, 2, {batch}); "
            f"got {tuple(log_mag.shape)}, {tuple(phase.shape)}, {tuple(x.shape)}, {tuple(h0.shape)}"
        )
    size, blocks = block_shape(steps)
    pad = size * blocks - steps
    if pad:
        x = F.pad(x, (0, pad))
    x = x.reshape(n, 2, batch, blocks, size).permute(0, 1, 4, 3, 2)  # (N, 2, C, blocks, B)
    h = two_level_scan(log_mag, phase, x, h0).permute(0, 1, 4, 3, 2).reshape(n, 2, batch, blocks * size)
    return h[..., :steps] if pad else h
