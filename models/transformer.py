"""``transformer``: a causal decoder with windowed attention and a bounded KV cache.

    h = Linear(x)
    for each of num_layers pre-norm blocks (Xiong et al. 2020):
        h = h + Attn(LN(h))        # step t attends to steps t-W+1 .. t only
        h = h + MLP(LN(h))
    y = Linear(LN(h))

Positions are relative: each head adds a learned bias b[offset] for offset = t - s in 0..W-1 to
its attention logits (the T5 relative bias of Raffel et al. 2020, one scalar per offset instead
of buckets), initialised to the ALiBi recency slopes (Press et al. 2022). Nothing depends on an
absolute position, so a stream of any length is exact and windowing changes nothing.

State: the keys and values of the last ``W - 1`` steps of every layer, (B, L, W-1, heads, d_head)
each, and a bool (B, W-1) saying which cache slots hold real steps (oldest slot first). Shapes
never change, so a step costs O(W * d) and states stack under ``torch.func.vmap``. Invalid slots
hold zeros, so a state depends only on the steps it remembers.

Sequence mode prepends the cache to the chunk's keys and computes the banded attention in blocks
of ``Q = min(T, W)`` queries, each against its ``Q + W - 1`` keys: memory O(T * W), not O(T^2),
with no Python loop over time. A reset is native: a key is visible only from the same episode
(segment ids from a cumulative sum of ``reset``). Step mode has its own short path: one query
per head against the W - 1 cached keys and its own, and the cache shifted by one slot.
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SequenceModel, State
from models.layers import LayerNorm, gelu_native


@dataclasses.dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    """Attributes:
    num_layers: pre-norm decoder blocks.
    num_heads: attention heads; each has ``max(1, hidden_dim // num_heads)`` dimensions, so
        every integer ``hidden_dim`` is valid (q, k, v project to ``num_heads * head_dim`` and
        back), which ``param_budget`` bisection needs.
    window: W, the steps each step attends to (itself and the W - 1 before it); the KV cache
        holds W - 1 steps per layer.
    mlp_ratio: width of each block's MLP as a multiple of ``hidden_dim`` (rounded, at least 1).
    """

    num_layers: int = 2
    num_heads: int = 4
    window: int = 32
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_layers", "num_heads", "window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"TransformerConfig.{name}: expected a positive int, got {value!r}"
                )
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 0:
            raise ValueError(
                f"TransformerConfig.mlp_ratio: expected a positive number, got {ratio!r}"
            )

    @property
    def head_dim(self) -> int:
        """Dimensions per head."""
        return max(1, self.hidden_dim // self.num_heads)

    @property
    def attn_dim(self) -> int:
        """Width of q, k and v: ``num_heads * head_dim`` (at most ``hidden_dim`` unless tiny)."""
        return self.num_heads * self.head_dim

    @property
    def mlp_dim(self) -> int:
        """Hidden width of each block's MLP."""
        return max(1, round(self.mlp_ratio * self.hidden_dim))

    @property
    def cache_len(self) -> int:
        """Steps of keys and values kept per layer: ``window - 1``."""
        return self.window - 1


def alibi_slopes(num_heads: int) -> Tensor:
    """Per-head recency slopes 2^(-8 (h + 1) / H) (Press et al. 2022, "Train Short, Test Long")."""
    return torch.pow(2.0, -8.0 * torch.arange(1, num_heads + 1, dtype=torch.float32) / num_heads)


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


def window_mask(key_valid: Tensor, segment: Tensor | None, window: int) -> Tensor:
    """Additive attention mask (0 or -inf) hiding empty cache slots and other episodes' steps.

    Args:
        key_valid: (B, C + T) bool, False for empty cache slots.
        segment: optional (B, C + T) int episode ids (the cache is segment 0); a query sees
            only keys of its own segment.
        window: W = C + 1.

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
    zero = torch.zeros((), device=key_valid.device)
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


def banded_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor) -> Tensor:
    """Causal attention of T queries over their window of W keys, computed in blocks.

    Query t sits at key position C + t (C = W - 1 cached keys come first) and sees keys
    C + t - (W - 1) .. C + t, less those ``mask`` hides. Queries go in blocks of
    Q = min(T, W), each against the Q + C keys that its window can reach.

    Args:
        q: queries (B, T, H, dh), already scaled by 1 / sqrt(dh).
        k, v: keys and values (B, C + T, H, dh): the cache followed by the chunk.
        bias: (H, Q, Q + C) relative position bias of a block, -inf outside the band.
        mask: additive mask from ``window_mask``.

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
    scores = scores + (bias + mask)
    out = scores.softmax(dim=-1) @ v_b.transpose(2, 3)  # (B, n, H, Q, dh)
    return out.transpose(2, 3).reshape(batch, blocks * block, heads, -1)[:, :steps]


class Attention(nn.Module):
    """Windowed multi-head self-attention with a relative position bias and a KV cache."""

    bias_index: Tensor
    band: Tensor

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.cache_len = config.cache_len
        self.qkv = nn.Linear(config.hidden_dim, 3 * config.attn_dim)
        self.out = nn.Linear(config.attn_dim, config.hidden_dim)
        offsets = torch.arange(config.window, dtype=torch.float32)
        self.rel_bias = nn.Parameter(-alibi_slopes(config.num_heads)[:, None] * offsets)  # (H, W)
        index, band = band_tables(config.window)  # constants, built once
        self.register_buffer("bias_index", index, persistent=False)
        self.register_buffer("band", band, persistent=False)

    def forward(
        self, h: Tensor, cache_k: Tensor, cache_v: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """h (B, T, D), cache (B, C, H, dh) -> (B, T, D) and keys / values (B, C + T, H, dh)."""
        batch, steps, _ = h.shape
        qkv = self.qkv(h).reshape(batch, steps, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(dim=2)  # each (B, T, H, dh)
        k_all = torch.cat([cache_k, k], dim=1)  # (B, C + T, H, dh)
        v_all = torch.cat([cache_v, v], dim=1)
        keys = mask.shape[-1]  # Q + C keys per block of Q queries
        block = keys - self.cache_len
        bias = torch.where(
            self.band[:block, :keys],
            self.rel_bias[:, self.bias_index[:block, :keys]],
            float("-inf"),
        )  # (H, Q, Q + C)
        att = banded_attention(q / math.sqrt(self.head_dim), k_all, v_all, bias, mask)
        return self.out(att.reshape(batch, steps, -1)), k_all, v_all

    def step(
        self, h: Tensor, cache_k: Tensor, cache_v: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One query per head against the W - 1 cached keys and its own key.

        Args:
            h: (B, D) the normalised step.
            cache_k, cache_v: (B, C, H, dh), oldest slot first.
            mask: (B, 1, C + 1) additive, -inf for empty cache slots (the own key is visible).

        Returns:
            (B, D) attention output and keys / values (B, C + 1, H, dh), the step's last.

        Shapes:
            Both products are one batched matmul per row on the cache's own layout: every
            query against every (slot, head) key, (B, (C + 1) H, H), and every head's weights
            against every head's values, (B, H, H dh), each keeping its diagonal (head with
            head). H times the (tiny) arithmetic, but no copy of the cache into a per-head
            layout and far fewer, larger matmuls than one per (row, head).
        """
        batch, heads, width = h.shape[0], self.num_heads, self.num_heads * self.head_dim
        qkv = self.qkv
        q, k, v = F.linear(h, qkv.weight, qkv.bias).reshape(batch, 3, 1, heads, -1).unbind(1)
        k_all = torch.cat([cache_k, k], dim=1)  # (B, C + 1, H, dh)
        v_all = torch.cat([cache_v, v], dim=1)
        scores = torch.bmm(k_all.reshape(batch, -1, self.head_dim), q[:, 0].transpose(1, 2))
        # (B, (C + 1) H, H): slot s and key head against query head; keep head with head
        scores = scores.reshape(batch, -1, heads, heads).diagonal(dim1=2, dim2=3).transpose(1, 2)
        # slot s holds offset C - s: the bias reversed along offsets lines up with the slots
        logits = torch.add(self.rel_bias.flip(-1) + mask, scores, alpha=1 / math.sqrt(self.head_dim))
        att = torch.bmm(logits.softmax(dim=-1), v_all.reshape(batch, -1, width))  # (B, H, H dh)
        att = att.reshape(batch, heads, heads, -1).diagonal(dim1=1, dim2=2)  # (B, dh, H)
        out = self.out
        return F.linear(att.transpose(1, 2).reshape(batch, width), out.weight, out.bias), k_all, v_all


class Block(nn.Module):
    """Pre-norm decoder block: h + Attn(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_attn = LayerNorm(config.hidden_dim)
        self.attn = Attention(config)
        self.norm_mlp = LayerNorm(config.hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_dim, config.mlp_dim),
            nn.GELU(),
            nn.Linear(config.mlp_dim, config.hidden_dim),
        )

    def forward(
        self, h: Tensor, cache_k: Tensor, cache_v: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k_all, v_all = self.attn(self.norm_attn(h), cache_k, cache_v, mask)
        h = h + a
        return h + self.mlp(self.norm_mlp(h)), k_all, v_all

    def step(
        self, h: Tensor, cache_k: Tensor, cache_v: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` for one step, h (B, D) (see ``Attention.step``), calling the linear layers'
        functions directly: a module call costs more than a one-step matmul."""
        a, k_all, v_all = self.attn.step(self.norm_attn(h), cache_k, cache_v, mask)
        h = h + a
        up, _, down = cast(tuple[nn.Linear, nn.GELU, nn.Linear], tuple(self.mlp))
        m = gelu_native(F.linear(self.norm_mlp(h), up.weight, up.bias))
        return h + F.linear(m, down.weight, down.bias), k_all, v_all


class Transformer(SequenceModel):
    """Causal decoder-only transformer with windowed attention; state is a bounded KV cache.

    State: dict ``keys``, ``values`` (B, L, W-1, H, dh) and ``valid`` (B, W-1) bool.
    """

    name = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.cache_len = config.cache_len
        self.cache_shape = (config.num_layers, config.cache_len, config.num_heads, config.head_dim)
        self.encoder = nn.Linear(config.input_dim, config.hidden_dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = LayerNorm(config.hidden_dim)
        self.head = nn.Linear(config.hidden_dim, config.output_dim)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        shape = (batch_size, *self.cache_shape)
        dtype = self.encoder.weight.dtype  # a float64 model gets a float64 cache
        return {
            "keys": torch.zeros(shape, dtype=dtype, device=device),
            "values": torch.zeros(shape, dtype=dtype, device=device),
            "valid": torch.zeros(batch_size, self.cache_len, dtype=torch.bool, device=device),
        }

    def _run(self, x: Tensor, state: State, segment: Tensor | None) -> tuple[Tensor, State]:
        """x (B, T, in) from ``state``; ``segment`` (B, C + T) episode ids or None (one episode)."""
        cache = self.cache_len
        batch, steps, _ = x.shape
        valid_all = torch.cat([state["valid"], state["valid"].new_ones(batch, steps)], dim=1)
        mask = window_mask(valid_all, segment, cache + 1)  # shared by the layers
        h = self.encoder(x)  # (B, T, D)
        new_k, new_v = [], []
        for layer, block in enumerate(self.blocks):
            h, k_all, v_all = block(h, state["keys"][:, layer], state["values"][:, layer], mask)
            new_k.append(k_all[:, k_all.shape[1] - cache :])  # the last W - 1 steps
            new_v.append(v_all[:, v_all.shape[1] - cache :])
        y = self.head(self.norm(h))

        valid = valid_all[:, valid_all.shape[1] - cache :]  # (B, C)
        keys, values = torch.stack(new_k, dim=1), torch.stack(new_v, dim=1)
        if segment is None:
            # The only empty slots are the state's own, shifted: they hold zeros already.
            return y, {"keys": keys, "values": values, "valid": valid}
        # Steps before the last reset are forgotten, and zeroed: empty slots hold zeros (a
        # canonical state).
        valid = valid & (segment[:, segment.shape[1] - cache :] == segment[:, -1:])
        keep = valid[:, None, :, None, None]
        keys = torch.where(keep, keys, 0.0)
        values = torch.where(keep, values, 0.0)
        return y, {"keys": keys, "values": values, "valid": valid}

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run(x, state, None)

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x (B, in) -> y (B, out): ``_run`` with T = 1 without its block machinery.

        The cache shifts by one slot: the oldest step leaves, this step enters as valid. Empty
        slots shift too and keep their zeros, and the step's own key is always valid, so a
        canonical state (zeros where not ``valid``) stays canonical with no masking of the cache.
        """
        seen = F.pad(state["valid"], (0, 1), value=True)  # (B, C + 1): the cache, then this step
        mask = torch.where(seen, 0.0, float("-inf")).unsqueeze(1)  # (B, 1, C + 1)
        encoder = self.encoder
        h = F.linear(x, encoder.weight, encoder.bias)
        new_k, new_v = [], []
        for layer, block in enumerate(cast(list[Block], self.blocks)):
            h, k_all, v_all = block.step(h, state["keys"][:, layer], state["values"][:, layer], mask)
            new_k.append(k_all[:, 1:])  # drop the oldest slot
            new_v.append(v_all[:, 1:])
        head = self.head
        y = F.linear(self.norm(h), head.weight, head.bias)
        keys, values = torch.stack(new_k, dim=1), torch.stack(new_v, dim=1)
        return y, {"keys": keys, "values": values, "valid": seen[:, 1:]}

    def _forward_sequence_with_reset(
        self, x: Tensor, state: State, reset: Tensor
    ) -> tuple[Tensor, State]:
        # A reset at t starts segment k + 1; the cache is segment 0, so it is hidden after one.
        episode = torch.cumsum(reset.long(), dim=1)  # (B, T)
        segment = torch.cat([episode.new_zeros(x.shape[0], self.cache_len), episode], dim=1)
        return self._run(x, state, segment)
