"""Banded (windowed) causal attention with a relative position bias, its masks, and ``cache_fill``.

Query t attends to the W keys t - W + 1 .. t. The keys are the C = W - 1 cached steps followed by
the chunk's own T steps; queries go in blocks of Q = min(T, W), each against the Q + C keys its
window can reach, so memory is O(T W), not O(T^2), with no Python loop over time. Masks are
additive (0 or -inf): empty cache slots and other episodes' steps are hidden. ``sequence_masks``
picks the smallest mask a chunk needs, ``cache_fill`` reading whether the cache is empty or full
(also under torch.func transforms); ``step_mask`` is the same for one step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models._functorch import transforms_active, unwrapped


def block_layout(steps: int, window: int) -> tuple[int, int, int]:
    """Query blocks for T steps: (Q, n, pad) with Q = min(T, W), n = ceil(T / Q), pad = n Q - T."""
    block = min(steps, window)
    blocks = -(-steps // block)
    return block, blocks, blocks * block - steps


def pad_steps(seq: Tensor, pad: int, value: float = 0.0) -> Tensor:
    """Append ``pad`` steps of ``value`` along dim 1 of (B, T, ...); no copy when pad is 0."""
    if pad == 0:
        return seq
    return F.pad(seq, (0, 0) * (seq.dim() - 2) + (0, pad), value=value)


def overlapping_blocks(seq: Tensor, block: int, cache: int) -> Tensor:
    """Overlapping windows of Q + C steps, stride Q: (B, C + n Q, ...) -> (B, n, Q + C, ...).

    Window j covers steps j Q .. j Q + Q + C - 1: the C steps before query block j, then block j.
    Built from reshapes and one concatenation (not ``unfold``, whose backward has no vmap rule).
    Needs ``cache <= block`` unless there is a single block.
    """
    batch, steps, rest = seq.shape[0], seq.shape[1] - cache, seq.shape[2:]
    blocks = steps // block
    if blocks == 1:
        return seq.unsqueeze(1)
    before = seq[:, :steps].reshape(batch, blocks, block, *rest)[:, :, :cache]  # (B, n, C, ...)
    current = seq[:, cache:].reshape(batch, blocks, block, *rest)  # (B, n, Q, ...)
    return torch.cat([before, current], dim=2)


def window_mask(
    key_valid: Tensor, segment: Tensor | None, window: int, dtype: torch.dtype | None = None
) -> Tensor:
    """Additive attention mask (0 or -inf) hiding empty cache slots and other episodes' steps.

    Args:
        key_valid: (B, C + T) bool, False for empty cache slots.
        segment: optional (B, C + T) int episode ids (the cache is segment 0); a query sees
            only keys of its own segment.
        window: W = C + 1.
        dtype: the mask's (the model's, so a bf16 model's scores stay bf16); default float32.

    Returns:
        (B, n, 1, 1, Q + C) without ``segment``, (B, n, 1, Q, Q + C) with it: broadcastable
        against the block scores (B, n, H, Q, Q + C) of ``banded_attention``.
    """
    batch, cache = key_valid.shape[0], window - 1
    block, blocks, pad = block_layout(key_valid.shape[1] - cache, window)
    # Padded keys are valid and share the last segment: only padded queries see them.
    visible = overlapping_blocks(pad_steps(key_valid, pad, value=True), block, cache)
    visible = visible[:, :, None, None, :]  # (B, n, 1, 1, Q + C)
    if segment is not None:
        seg = torch.cat([segment, segment[:, -1:].expand(batch, pad)], dim=1)
        seg_k = overlapping_blocks(seg, block, cache)  # (B, n, Q + C)
        seg_q = seg[:, cache:].reshape(batch, blocks, block)  # (B, n, Q)
        visible = visible & (seg_q[:, :, None, :, None] == seg_k[:, :, None, None, :])
    zero = torch.zeros((), dtype=dtype, device=key_valid.device)
    return torch.where(visible, zero, float("-inf"))


def band_tables(window: int) -> tuple[Tensor, Tensor]:
    """Offsets and band of a block of W queries against its W + C keys (C = W - 1).

    Local query i sits at key position C + i of its block, so its offset to local key j is
    C + i - j, inside the window when 0 <= C + i - j <= C. A block of Q < W queries uses the
    top-left (Q, Q + C) corner.

    Returns:
        ``(index, band)``, both (W, W + C): the offset clamped to 0..C (to index the bias by)
        and the bool band.
    """
    cache = window - 1
    offset = cache + torch.arange(window)[:, None] - torch.arange(window + cache)[None, :]
    return offset.clamp(0, cache), (offset >= 0) & (offset <= cache)


def banded_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
    """Causal attention of T queries over their window of W keys, computed in blocks.

    Query t sits at key position C + t (C = W - 1 cached keys come first) and sees keys
    C + t - (W - 1) .. C + t, less those ``mask`` hides. Queries go in blocks of
    Q = min(T, W), each against the Q + C keys that its window can reach.

    Args:
        q: queries (B, T, H, dh), already scaled by 1 / sqrt(dh).
        k, v: keys and values (B, C + T, H, dh): the cache followed by the chunk.
        bias: (H, Q, Q + C) relative position bias of a block, -inf outside the band.
        mask: additive mask from ``window_mask``; None when no key needs hiding beyond the band.

    Returns:
        (B, T, H, dh) attention outputs.

    Shapes:
        The largest intermediate is the block scores (B, n, H, Q, Q + C), n = ceil(T / Q):
        O(T * W) memory, not O(T^2). Blocks lead so the bias gradient sums over leading dims.
    """
    batch, steps, heads, _ = q.shape
    block, cache = bias.shape[-2], bias.shape[-1] - bias.shape[-2]
    _, blocks, pad = block_layout(steps, cache + 1)

    # Padded queries are dropped at the end; padded keys are seen only by padded queries.
    q_b = pad_steps(q, pad).reshape(batch, blocks, block, heads, -1)  # (B, n, Q, H, dh)
    k_b = overlapping_blocks(pad_steps(k, pad), block, cache)  # (B, n, Q + C, H, dh)
    v_b = overlapping_blocks(pad_steps(v, pad), block, cache)

    scores = q_b.transpose(2, 3) @ k_b.permute(0, 1, 3, 4, 2)  # (B, n, H, Q, Q + C)
    scores = scores + (bias if mask is None else bias + mask)
    out = scores.softmax(dim=-1) @ v_b.transpose(2, 3)  # (B, n, H, Q, dh)
    return out.transpose(2, 3).reshape(batch, blocks * block, heads, -1)[:, :steps]


def chunk_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
    """Causal attention of T <= W queries over the chunk's own T keys: no cache, one block.

    Args:
        q: queries (B, T, H, dh), already scaled by 1 / sqrt(dh).
        k, v: the chunk's keys and values (B, T, H, dh).
        bias: (H, T, T) relative position bias, -inf above the diagonal.
        mask: None, or additive (B, 1, T, T) from ``segment_mask``.

    Returns:
        (B, T, H, dh) attention outputs.
    """
    scores = q.transpose(1, 2) @ k.permute(0, 2, 3, 1)  # (B, H, T, T)
    scores = scores + (bias if mask is None else bias + mask)
    return (scores.softmax(dim=-1) @ v.transpose(1, 2)).transpose(1, 2)  # (B, T, H, dh)


def segment_mask(segment: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Additive (B, 1, T, T) mask (0 or -inf) letting a query see only keys of its own episode.

    ``segment`` is (B, T) episode ids of the chunk's steps (``chunk_attention``'s keys).
    """
    visible = segment[:, None, :, None] == segment[:, None, None, :]
    zero = torch.zeros((), dtype=dtype, device=segment.device)
    return torch.where(visible, zero, float("-inf"))


def cache_fill(valid: Tensor) -> str | None:
    """``"full"`` when every cache slot of every row is valid, ``"empty"`` when none is, else None.

    Under ``torch.func`` transforms (MAML's vmap and grad) the state's tensors are wrappers whose
    values an op may not branch on; this reads the values stored beneath them, so the answer
    covers every row of every task at once. It only picks between computations equal to float
    rounding (an empty cache's keys are all hidden; a full cache needs no mask), so the results
    never depend on it. A tensor without stored values (meta, fake) gets None: the general path.
    """
    raw = unwrapped(valid)
    if type(raw) is not Tensor or raw.device.type == "meta":
        return None
    if bool(raw.all()):  # also a cache of no slots (W = 1)
        return "full"
    return None if bool(raw.any()) else "empty"


def sequence_masks(
    valid: Tensor, steps: int, segment: Tensor | None, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None, bool]:
    """The keys' validity and the attention mask of a chunk of T steps after the cache.

    The mask is as small as the cache allows: none for a full cache (or an empty one seen by a
    single block), one row for every batch row when the cache is empty, per row otherwise. An
    empty cache (a fresh state, as every MAML window starts from) is left out of a single block's
    keys altogether (``see_cache`` False: ``chunk_attention``).

    Args:
        valid: (B, C) bool, the cache slots that hold real steps.
        steps: T.
        segment: (B, C + T) episode ids (the cache is segment 0), or None for one episode.
        dtype: the mask's.

    Returns:
        ``(valid_all, mask, see_cache)``: valid_all (B, C + T); the mask for ``banded_attention``
        (``window_mask``) or, without ``see_cache``, for ``chunk_attention`` (``segment_mask``);
        None when nothing needs hiding beyond the band.
    """
    batch, cache = valid.shape
    valid_all = torch.cat([valid, valid.new_ones(batch, steps)], dim=1)
    fill = cache_fill(valid)
    see_cache = fill != "empty" or steps > cache + 1
    mask: Tensor | None = None
    if not see_cache:
        if segment is not None:
            mask = segment_mask(segment[:, cache:], dtype)
    elif segment is not None or fill is None:
        mask = window_mask(valid_all, segment, cache + 1, dtype)
    elif fill == "empty":  # the same for every row: only the first block's cache is hidden
        seen = torch.arange(cache + steps, device=valid.device)[None, :] >= cache  # (1, C + T)
        mask = window_mask(seen, None, cache + 1, dtype)
    return valid_all, mask, see_cache


def step_mask(valid: Tensor, dtype: torch.dtype) -> tuple[Tensor | None, Tensor]:
    """The additive mask (B, 1, C + 1) of one step's query against the cache and its own key, and
    the next state's ``valid`` (the cache shifted by one slot, this step valid).

    A full cache (every slot valid, as after W - 1 steps of an episode) needs no mask (None);
    that is read outside torch.func transforms only, where a tensor's value may decide the path.
    """
    if not transforms_active() and bool(valid.all()):
        return None, valid
    seen = F.pad(valid, (0, 1), value=True)  # (B, C + 1): the cache, then this step
    zero = torch.zeros((), dtype=dtype)  # the model's: a bf16 model stays bf16
    return torch.where(seen, zero, float("-inf")).unsqueeze(1), seen[:, 1:]
