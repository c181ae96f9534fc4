"""Parallel scans for the first-order linear recurrence h_t = a_t * h_{t-1} + b_t.

Entry points, none with a Python loop over time:

- ``linear_scan(a, b, h0)``: any complex (or real) a_t, b_t that vary in time, zeros included.
  A work-efficient odd/even (Blelloch-style) recursion of the associative operator
  (a_i, b_i) o (a_j, b_j) = (a_j a_i, a_j b_i + b_j) (Smith et al. 2023, S5; Blelloch 1990):
  O(T) work, O(log T) depth.
- ``diagonal_scan(log_mag, phase, x, h0, reset)`` (time-ordered) and ``chunked_scan`` (the same
  in the chunk-major layout of ``to_chunks``): the time-invariant diagonal case the SSM needs,
  a_t = lambda = exp(log_mag + i phase), with the reset operator of Lu et al. (2023): a_t := 0
  where reset (the fresh state is zero). Complex numbers are carried as real and imaginary
  planes, so autograd, double backward, ``torch.func.vmap`` and ``functional_call`` see only real
  tensors. The work is matrix products: within a chunk of C steps the states are a Toeplitz
  product with lambda^(t-s) (one batched matmul); the chunk-end states follow the same scan one
  level up with lambda^C (a chunk that contains a reset gets a_c := 0 there); the state entering
  a chunk, h0 for the first, enters in closed form, h_t += lambda^(t+1) h_in, so a sequence can
  continue from any state. Work is O(T C) per state channel: linear in T.

Short sequences without resets take the two-level block scan of ``models.kernels.two_level_scan``.

References:
    Blelloch, "Prefix sums and their applications", 1990.
    Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling" (S5),
    ICLR 2023.
    Lu et al., "Structured State Space Models for In-Context Reinforcement Learning", NeurIPS 2023.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models._functorch import transforms_active
from models.kernels.two_level_scan import one_chunk_scan, wide_dtype


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t along dim 1, for time-varying a_t.

    Args:
        a: multipliers, (B, T, ...), complex or real; zeros allowed (they cut the history).
        b: inputs, same shape as ``a``.
        h0: state before step 0, (B, ...); zeros when None.

    Returns:
        h: (B, T, ...), h[:, t] the state after step t.
    """
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(
            f"linear_scan: a and b expected the same shape (B, T, ...), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if h0 is not None:
        if h0.shape != b.shape[:1] + b.shape[2:]:
            raise ValueError(
                f"linear_scan: h0 expected shape {tuple(b.shape[:1] + b.shape[2:])}, got {tuple(h0.shape)}"
            )
        # The initial state in closed form: it enters as a_0 h0 added to b_0.
        b = torch.cat([(a[:, 0] * h0 + b[:, 0]).unsqueeze(1), b[:, 1:]], dim=1)
    return _odd_even_scan(a, b)


def _odd_even_scan(a: Tensor, b: Tensor) -> Tensor:
    """Blelloch's recursion: combine neighbouring pairs, scan the half, fill in the evens."""
    steps = b.shape[1]
    if steps == 1:
        return b
    if steps % 2:
        # An odd length: scan the even-length prefix, then one more combine for the last step.
        head = _odd_even_scan(a[:, :-1], b[:, :-1])
        return torch.cat([head, a[:, -1:] * head[:, -1:] + b[:, -1:]], dim=1)
    a_even, a_odd = a[:, 0::2], a[:, 1::2]
    b_even, b_odd = b[:, 0::2], b[:, 1::2]
    h_odd = _odd_even_scan(a_odd * a_even, a_odd * b_even + b_odd)  # states after steps 1, 3, 5, ...
    h_before_even = torch.cat([torch.zeros_like(h_odd[:, :1]), h_odd[:, :-1]], dim=1)
    h_even = a_even * h_before_even + b_even  # states after steps 0, 2, 4, ...
    return torch.stack([h_even, h_odd], dim=2).reshape(b.shape)


def to_chunks(x: Tensor, size: int) -> Tensor:
    """(..., B, T) -> (..., C, B, T // C): time split into chunks of ``size``, chunk position first.

    T must be a multiple of ``size``. This "chunk-major" order is the layout ``chunked_scan``
    works in; per-token layers do not care about token order, so a model can stay in it.
    """
    *lead, batch, steps = x.shape
    if size < 1 or steps % size:
        raise ValueError(f"to_chunks: size expected a positive divisor of T = {steps}, got {size}")
    return x.reshape(*lead, batch, steps // size, size).movedim(-1, -3)


def from_chunks(x: Tensor) -> Tensor:
    """(..., C, B, chunks) -> (..., B, chunks * C): the inverse of ``to_chunks``."""
    *lead, size, batch, chunks = x.shape
    return x.movedim(-3, -1).reshape(*lead, batch, chunks * size)


def lambda_powers(log_mag: Tensor, phase: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of lambda^k, k = 0..count-1, in closed form; each (N, count).

    Computed in float64 (a table of N x count numbers): k * arg(lambda) reaches thousands of
    radians at the upper levels of the scan, where float32 would lose the phase.
    """
    wide = wide_dtype(log_mag.dtype)
    k = torch.arange(count, device=log_mag.device, dtype=wide)
    mag = torch.exp(log_mag.to(wide).unsqueeze(1) * k)
    angle = phase.to(wide).unsqueeze(1) * k
    return (mag * torch.cos(angle)).to(log_mag.dtype), (mag * torch.sin(angle)).to(log_mag.dtype)


def chunked_scan(log_mag: Tensor, phase: Tensor, x: Tensor, h0: Tensor, reset: Tensor | None = None) -> Tensor:
    """States of h_t = a_t h_{t-1} + x_t, a_t = exp(log_mag + i phase), a_t = 0 where reset.

    Works in the chunk-major layout of ``to_chunks``: step t = c * C + s sits at [s, b, c].

    Args:
        log_mag: log |lambda|, (N,); finite (a stable model keeps it < 0).
        phase: arg lambda, (N,).
        x: inputs as (real, imaginary) planes, (N, 2, C, B, chunks).
        h0: the state before step 0, (N, 2, B).
        reset: optional bool (C, B, chunks); where True the state is zeroed before that step.

    Returns:
        h: (N, 2, C, B, chunks), the state after each step.
    """
    n, two, size, batch, chunks = x.shape
    if two != 2 or log_mag.shape != (n,) or phase.shape != (n,) or h0.shape != (n, 2, batch):
        raise ValueError(
            f"chunked_scan: expected log_mag, phase ({n},), x (N, 2, C, B, chunks), "
            f"h0 ({n}, 2, {batch}); "
            f"got {tuple(log_mag.shape)}, {tuple(phase.shape)}, {tuple(x.shape)}, {tuple(h0.shape)}"
        )
    if reset is not None and reset.shape != (size, batch, chunks):
        raise ValueError(
            f"chunked_scan: reset expected shape {(size, batch, chunks)} (the layout of x), got {tuple(reset.shape)}"
        )
    rows = batch * chunks
    pow_re, pow_im = lambda_powers(log_mag, phase, size + 1)  # (N, C + 1)

    # Within a chunk, G_t = sum_{s <= t} lambda^(t-s) x_s.
    if rows <= _ROTATE_MAX_ROWS_PER_STEP * size and (_ROTATE_WITHOUT_TRANSFORMS or transforms_active()):
        g = _rotated_toeplitz_product(log_mag, phase, x.reshape(n, 2, size, rows)).reshape(n, 2 * size, rows)
    else:
        # One batched matmul with the real form [[Re W, -Im W], [Im W, Re W]] of the Toeplitz
        # matrix W[t, s] = lambda^(t-s) [t >= s].
        lag, causal = _toeplitz_index(size, x.dtype, x.device)
        w_re, w_im = pow_re[:, lag] * causal, pow_im[:, lag] * causal
        toeplitz = torch.cat([torch.cat([w_re, -w_im], 2), torch.cat([w_im, w_re], 2)], 1)  # (N, 2C, 2C)
        x_rows = x.reshape(n, 2 * size, rows)
        g = torch.bmm(toeplitz, x_rows)  # (N, 2C, rows), rows of the result ordered (re/im, t)

    carry_mask: Tensor | None = None
    chunk_reset: Tensor | None = None
    if reset is None:
        ends = g.reshape(n, 2, size, rows)[:, :, -1]  # the chunk-end states, (N, 2, rows)
    else:
        g, carry_mask = _cut_at_resets(g.reshape(n, 2, size, batch, chunks), pow_re, pow_im, reset)
        ends = g[:, :, -1].reshape(n, 2, rows)
        chunk_reset = reset.any(dim=0)  # (B, chunks): a_c := 0 one level up
        g = g.reshape(n, 2 * size, rows)

    # The state entering each chunk: h0 for the first, the previous chunk's end otherwise. The
    # chunk ends obey the same recurrence with lambda^C, so the same scan gives them (recursion
    # depth log_C T).
    h_in = h0.unsqueeze(-1)  # (N, 2, B, 1)
    if chunks > 1:
        # lambda^C: log|lambda| * C and arg(lambda) * C, both formed in float64 for the phase's sake.
        wide = torch.float64
        h_end = _scan_sequence(
            (log_mag.to(wide) * size).to(log_mag.dtype),
            phase.to(wide) * size,
            ends.reshape(n, 2, batch, chunks),
            h0,
            chunk_reset,
            size,
        )
        h_in = torch.cat([h_in, h_end[..., :-1]], dim=-1)  # (N, 2, B, chunks)
    # Its contribution lambda^(t+1) h_in, as a real 2x2 block per step: (N, 2C, 2).
    p_re, p_im = pow_re[:, 1:], pow_im[:, 1:]
    lift = torch.stack([torch.cat([p_re, p_im], 1), torch.cat([-p_im, p_re], 1)], dim=2)
    h_in = h_in.reshape(n, 2, rows)
    if carry_mask is None:
        h = torch.baddbmm(g, lift, h_in)
    else:
        h = g + torch.bmm(lift, h_in) * carry_mask.reshape(1, size, rows).repeat(1, 2, 1)
    return h.reshape(n, 2, size, batch, chunks)


_ROTATE_MAX_ROWS_PER_STEP = 0.5
"""``chunked_scan`` takes the rotated path while B * chunks <= this x C: few rows against the C^2
of the Toeplitz matrix, where building the matrix is what costs."""

_ROTATE_WITHOUT_TRANSFORMS = False
"""Whether the rotated path is taken outside torch.func transforms too. Off: it wins under vmap,
where the real form's build is per task, but outside a transform its extra ops cost more than
they save (the per-task loop's second-order autograd). The tests set it to run both paths."""


def _rotated_toeplitz_product(log_mag: Tensor, phase: Tensor, x: Tensor) -> Tensor:
    """G_t = sum_{s <= t} lambda^(t-s) x_s for x (N, 2, C, rows) -> (N, 2, C, rows).

    lambda^(t-s) = e^(i t phi) |lambda|^(t-s) e^(-i s phi): rotate x by e^(-i s phi), apply the
    real (C, C) matrix |lambda|^(t-s) [t >= s] to both planes at once, rotate back by e^(i t phi).
    The matrix is built elementwise (no gather, whose backward is a slow accumulating
    index_put) and is a quarter of the real form's size; the matmul does half its work. The
    rotations are extra elementwise work on x, so this wins where rows are few against C^2.
    """
    size, rows = x.shape[2], x.shape[3]
    dtype = log_mag.dtype  # phase may come wider (the upper levels' arg(lambda^C))
    wide = wide_dtype(dtype)
    angle = phase.to(wide).unsqueeze(1) * torch.arange(size, device=phase.device, dtype=wide)
    cos, sin = torch.cos(angle).to(dtype).unsqueeze(-1), torch.sin(angle).to(dtype).unsqueeze(-1)  # (N, C, 1)
    # tril, not a product with the causal mask: under vmap the mask's product and its backward
    # cost far more.
    decay = torch.exp(_lag_grid(size, dtype, log_mag.device) * log_mag.reshape(-1, 1, 1)).tril()  # (N, C, C)
    x_re, x_im = x[:, 0], x[:, 1]
    y = torch.cat([torch.addcmul(cos * x_re, sin, x_im), torch.addcmul(cos * x_im, sin, x_re, value=-1)], -1)
    m = torch.bmm(decay, y)  # (N, C, 2 rows)
    m_re, m_im = m[..., :rows], m[..., rows:]
    return torch.stack([torch.addcmul(cos * m_re, sin, m_im, value=-1), torch.addcmul(cos * m_im, sin, m_re)], 1)


_LAG_GRID: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}


def _lag_grid(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """max(t - s, 0) as a (C, C) tensor in ``dtype`` at [t, s], made once per (size, dtype, device)."""
    key = (size, dtype, device)
    found = _LAG_GRID.get(key)
    if found is not None:
        return found
    with torch.inference_mode(False):  # usable outside inference mode, whoever asks first
        made = _toeplitz_index(size, dtype, device)[0].to(dtype)
    if type(made) is Tensor:  # not a tracing mode's fake tensor
        _LAG_GRID[key] = made
    return made


_TOEPLITZ_INDEX: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}


def _toeplitz_index(size: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """max(t - s, 0) as a (C, C) index and the causal mask [t >= s] in ``dtype``, made once per
    (size, dtype, device): on a short sequence their seven ops are a sizeable part of a call."""
    key = (size, dtype, device)
    found = _TOEPLITZ_INDEX.get(key)
    if found is not None:
        return found
    with torch.inference_mode(False):  # usable outside inference mode, whoever asks first
        t_idx = torch.arange(size, device=device)
        lag = t_idx.unsqueeze(1) - t_idx.unsqueeze(0)
        made = (lag.clamp(min=0), (lag >= 0).to(dtype))
    if all(type(t) is Tensor for t in made):  # not a tracing mode's fake tensors
        _TOEPLITZ_INDEX[key] = made
    return made


def _scan_sequence(log_mag: Tensor, phase: Tensor, x: Tensor, h0: Tensor, reset: Tensor | None, chunk: int) -> Tensor:
    """``chunked_scan`` on a time-ordered x (N, 2, B, T), T padded up to a multiple of the chunk."""
    steps = x.shape[-1]
    size = max(1, min(chunk, steps))
    pad = -steps % size
    if pad:
        # Padding at the end cannot change earlier states; it is cut off below.
        x = F.pad(x, (0, pad))
        reset = F.pad(reset, (0, pad)) if reset is not None else None
    r = to_chunks(reset, size) if reset is not None else None
    h = from_chunks(chunked_scan(log_mag, phase, to_chunks(x, size), h0, r))
    return h[..., :steps] if pad else h


def diagonal_scan(
    log_mag: Tensor,
    phase: Tensor,
    x: Tensor,
    h0: Tensor,
    reset: Tensor | None = None,
    chunk: int = 32,
) -> Tensor:
    """``chunked_scan`` for time-ordered inputs of any length (``one_chunk_scan`` when T <= chunk
    and there is no reset: the same states, fewer ops).

    Args:
        log_mag, phase: lambda = exp(log_mag + i phase), each (N,).
        x: inputs as (real, imaginary) planes, (N, 2, B, T).
        h0: the state before step 0, (N, 2, B).
        reset: optional bool (B, T); where True the state is zeroed before step t.
        chunk: steps per chunk C: work per state channel is O(T C), depth O(log_C T).

    Returns:
        h: (N, 2, B, T), the state after each step.
    """
    if x.dim() != 4 or x.shape[1] != 2:
        raise ValueError(f"diagonal_scan: x expected shape (N, 2, B, T), got {tuple(x.shape)}")
    if reset is not None and reset.shape != (x.shape[2], x.shape[3]):
        raise ValueError(f"diagonal_scan: reset expected shape {(x.shape[2], x.shape[3])}, got {tuple(reset.shape)}")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 2:
        raise ValueError(f"diagonal_scan: chunk expected an int >= 2, got {chunk!r}")
    if reset is None and x.shape[3] <= chunk:
        return one_chunk_scan(log_mag, phase, x, h0)
    return _scan_sequence(log_mag, phase, x, h0, reset, chunk)


def _cut_at_resets(g: Tensor, pow_re: Tensor, pow_im: Tensor, reset: Tensor) -> tuple[Tensor, Tensor]:
    """Apply a_t := 0 at resets to the within-chunk states G, in closed form.

    With l(t) the last reset at or before step t of the chunk, the state from l on is
    G_t - lambda^(t - l + 1) G_(l - 1): the part of G that entered before l is removed.

    Args:
        g: within-chunk states without resets, (N, 2, C, B, chunks).
        pow_re, pow_im: lambda^k for k = 0..C, (N, C + 1).
        reset: (C, B, chunks) bool.

    Returns:
        The corrected states (same shape as g) and the mask (C, B, chunks) of the steps that the
        state entering the chunk still reaches (no reset yet in the chunk).
    """
    size = reset.shape[0]
    pos = torch.arange(size, device=reset.device).reshape(size, 1, 1)
    last = torch.where(reset, pos, -1).cummax(dim=0).values  # (C, B, chunks); -1 before any reset
    idx = (last - 1).clamp(min=0).expand(g.shape)
    old = g.gather(2, idx) * (last >= 1).to(g.dtype)  # G_(l-1), zero where l <= 0
    lag = (pos - last).clamp(max=size - 1) + 1  # t - l + 1, in 1..C
    p_re, p_im = pow_re[:, lag], pow_im[:, lag]  # (N, C, B, chunks)
    old_re, old_im = old[:, 0], old[:, 1]
    cut = torch.stack([p_re * old_re - p_im * old_im, p_re * old_im + p_im * old_re], dim=1)
    return g - cut, (last < 0).to(g.dtype)
