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

State: the keys and values of the last ``W - 1`` steps of every layer, (B, L, heads, W-1, d_head)
each, and a bool (B, W-1) saying which cache slots hold real steps (oldest slot first). Shapes
never change, so a step costs O(W * d) and states stack under ``torch.func.vmap``. Invalid slots
hold zeros, so a state depends only on the steps it remembers.

Sequence mode prepends the cache to the chunk's keys and computes the banded attention in blocks
of ``Q = min(T, W)`` queries, each against its ``Q + W - 1`` keys: memory O(T * W), not O(T^2),
with no Python loop over time. A reset is native: a key is visible only from the same episode
(segment ids from a cumulative sum of ``reset``). Step mode is the same code with T = 1.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SequenceModel, State


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


def overlapping_blocks(seq: Tensor, block: int, cache: int) -> Tensor:
    """Overlapping windows of Q + C steps, stride Q: (..., C + n Q, F) -> (..., n, Q + C, F).

    Window j covers steps j Q .. j Q + Q + C - 1: the C steps before query block j, then block j.
    Built from reshapes and one concatenation (not ``unfold``, whose backward has no vmap rule).
    Needs ``cache <= block`` unless there is a single block.
    """
    steps = seq.shape[-2] - cache
    blocks = steps // block
    if blocks == 1:
        return seq.unsqueeze(-3)
    lead, feat = seq.shape[:-2], seq.shape[-1]
    before = seq[..., :steps, :].reshape(*lead, blocks, block, feat)[
        ..., :cache, :
    ]  # (..., n, C, F)
    current = seq[..., cache:, :].reshape(*lead, blocks, block, feat)  # (..., n, Q, F)
    return torch.cat([before, current], dim=-2)


def banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_valid: Tensor,
    rel_bias: Tensor,
    segment: Tensor | None = None,
) -> Tensor:
    """Causal attention of T queries over their window of W keys, computed in blocks.

    Query t sits at key position C + t (C = W - 1 cached keys come first) and sees keys
    C + t - (W - 1) .. C + t that are valid and, with ``segment``, in its own segment.

    Args:
        q: queries (B, H, T, dh), already scaled by 1 / sqrt(dh).
        k, v: keys and values (B, H, C + T, dh): the cache followed by the chunk.
        key_valid: (B, C + T) bool, False for empty cache slots.
        rel_bias: (H, W) logit bias per head and offset t - s.
        segment: optional (B, C + T) int episode ids (the cache is segment 0).

    Returns:
        (B, H, T, dh) attention outputs.

    Shapes:
        Blocks of Q = min(T, W) queries against Q + C keys: the largest intermediate is
        (B, H, ceil(T / Q), Q, Q + C), i.e. O(T * W).
    """
    batch, heads, steps, _ = q.shape
    window = rel_bias.shape[-1]
    cache = window - 1
    block = min(steps, window)
    blocks = -(-steps // block)
    pad = blocks * block - steps

    # Padded queries are dropped at the end; padded keys are seen only by padded queries.
    q_b = F.pad(q, (0, 0, 0, pad)).reshape(batch, heads, blocks, block, -1)  # (B, H, n, Q, dh)
    k_b = overlapping_blocks(F.pad(k, (0, 0, 0, pad)), block, cache)  # (B, H, n, Q + C, dh)
    v_b = overlapping_blocks(F.pad(v, (0, 0, 0, pad)), block, cache)  # (B, H, n, Q + C, dh)
    ok = F.pad(key_valid, (0, pad), value=True)[..., None]
    ok = overlapping_blocks(ok, block, cache)[..., 0]  # (B, n, Q + C)

    # Local query i is at key position C + i of its block; offset to local key j is C + i - j.
    offset = (
        cache
        + torch.arange(block, device=q.device)[:, None]
        - torch.arange(block + cache, device=q.device)
    )  # (Q, Q + C)
    band = (offset >= 0) & (offset <= cache)
    bias = rel_bias[:, offset.clamp(0, cache)]  # (H, Q, Q + C)

    visible = band & ok[:, :, None, :]  # (B, n, Q, Q + C)
    if segment is not None:
        seg = torch.cat([segment, segment[:, -1:].expand(batch, pad)], dim=1)
        seg_k = overlapping_blocks(seg[..., None], block, cache)[..., 0]  # (B, n, Q + C)
        seg_q = seg[:, cache:].reshape(batch, blocks, block)  # (B, n, Q)
        visible = visible & (seg_q[..., :, None] == seg_k[..., None, :])

    scores = q_b @ k_b.transpose(-1, -2) + bias[:, None]  # (B, H, n, Q, Q + C)
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    out = scores.softmax(dim=-1) @ v_b  # (B, H, n, Q, dh)
    return out.reshape(batch, heads, blocks * block, -1)[:, :, :steps]


class Attention(nn.Module):
    """Windowed multi-head self-attention with a relative position bias and a KV cache."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.qkv = nn.Linear(config.hidden_dim, 3 * config.attn_dim)
        self.out = nn.Linear(config.attn_dim, config.hidden_dim)
        offsets = torch.arange(config.window, dtype=torch.float32)
        self.rel_bias = nn.Parameter(-alibi_slopes(config.num_heads)[:, None] * offsets)  # (H, W)

    def forward(
        self, h: Tensor, cache_k: Tensor, cache_v: Tensor, key_valid: Tensor, segment: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """h (B, T, D), cache (B, H, C, dh) -> (B, T, D) and keys / values (B, H, C + T, dh)."""
        batch, steps, _ = h.shape
        qkv = self.qkv(h).reshape(batch, steps, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, dh)
        k_all = torch.cat([cache_k, k], dim=2)  # (B, H, C + T, dh)
        v_all = torch.cat([cache_v, v], dim=2)
        att = banded_attention(
            q / math.sqrt(self.head_dim), k_all, v_all, key_valid, self.rel_bias, segment
        )
        att = att.transpose(1, 2).reshape(batch, steps, -1)  # (B, T, H * dh)
        return self.out(att), k_all, v_all


class Block(nn.Module):
    """Pre-norm decoder block: h + Attn(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.hidden_dim)
        self.attn = Attention(config)
        self.norm_mlp = nn.LayerNorm(config.hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_dim, config.mlp_dim),
            nn.GELU(),
            nn.Linear(config.mlp_dim, config.hidden_dim),
        )

    def forward(
        self, h: Tensor, cache_k: Tensor, cache_v: Tensor, key_valid: Tensor, segment: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k_all, v_all = self.attn(self.norm_attn(h), cache_k, cache_v, key_valid, segment)
        h = h + a
        return h + self.mlp(self.norm_mlp(h)), k_all, v_all


class Transformer(SequenceModel):
    """Causal decoder-only transformer with windowed attention; state is a bounded KV cache.

    State: dict ``keys``, ``values`` (B, L, H, W-1, dh) and ``valid`` (B, W-1) bool.
    """

    name = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.cache_len = config.cache_len
        self.cache_shape = (config.num_layers, config.num_heads, config.cache_len, config.head_dim)
        self.encoder = nn.Linear(config.input_dim, config.hidden_dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_dim)
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
        h = self.encoder(x)  # (B, T, D)
        new_k, new_v = [], []
        for layer, block in enumerate(self.blocks):
            h, k_all, v_all = block(
                h, state["keys"][:, layer], state["values"][:, layer], valid_all, segment
            )
            new_k.append(k_all[:, :, k_all.shape[2] - cache :])  # the last W - 1 steps
            new_v.append(v_all[:, :, v_all.shape[2] - cache :])
        y = self.head(self.norm(h))

        valid = valid_all[:, valid_all.shape[1] - cache :]  # (B, C)
        if segment is not None:  # steps before the last reset are forgotten
            valid = valid & (segment[:, segment.shape[1] - cache :] == segment[:, -1:])
        keep = valid[:, None, None, :, None]  # empty slots hold zeros: a canonical state
        keys = torch.where(keep, torch.stack(new_k, dim=1), 0.0)
        values = torch.where(keep, torch.stack(new_v, dim=1), 0.0)
        return y, {"keys": keys, "values": values, "valid": valid}

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run(x, state, None)

    def _forward_sequence_with_reset(
        self, x: Tensor, state: State, reset: Tensor
    ) -> tuple[Tensor, State]:
        # A reset at t starts segment k + 1; the cache is segment 0, so it is hidden after one.
        episode = torch.cumsum(reset.long(), dim=1)  # (B, T)
        segment = torch.cat([episode.new_zeros(x.shape[0], self.cache_len), episode], dim=1)
        return self._run(x, state, segment)
