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

State: a tuple ``(valid, cache_1, ..., cache_L)``: ``valid`` a bool (B, W-1) saying which cache
slots hold real steps (oldest slot first), and per layer the keys and values of the last ``W - 1``
steps side by side, (B, W-1, 2 A) with A = heads * d_head (keys first, head-major). Shapes never
change, so a step costs O(W * d) and states stack under ``torch.func.vmap``. Invalid slots hold
zeros, so a state depends only on the steps it remembers.

Sequence mode runs the banded attention of ``models.kernels.banded_attention`` over the cache and
the chunk (a reset is native: a key is visible only from its own episode); the residual stream
runs as (B T, D) rows through ``layers.linear_rows``. Step mode is one query per head against the
W - 1 cached keys and its own, the cache shifted by one slot (``Attention.step``); without
autograd (MPC planning, rollouts) it runs on fused weights formed once (``models.fused_step``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SequenceModel, State
from models.fused_step import TransformerWeights, WeightCache, cached_step_weights, fuse_transformer, transformer_step
from models.kernels.banded_attention import band_tables, banded_attention, chunk_attention, sequence_masks, step_mask
from models.layers import LayerNorm, gelu_native, layer_norm, linear_rows


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
        self._check_positive_ints("num_layers", "num_heads", "window")
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 0:
            raise ValueError(f"TransformerConfig.mlp_ratio: expected a positive number, got {ratio!r}")

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


class Attention(nn.Module):
    """Windowed multi-head self-attention with a relative position bias and a KV cache."""

    bias_index: Tensor
    band: Tensor
    head_mask: Tensor
    head_mask_3d: Tensor

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.attn_dim, self.cache_len = config.attn_dim, config.cache_len
        self.qkv = nn.Linear(config.hidden_dim, 3 * config.attn_dim)
        self.out = nn.Linear(config.attn_dim, config.hidden_dim)
        offsets = torch.arange(config.window, dtype=torch.float32)
        self.rel_bias = nn.Parameter(-alibi_slopes(config.num_heads)[:, None] * offsets)  # (H, W)
        index, band = band_tables(config.window)  # constants, built once
        self.register_buffer("bias_index", index, persistent=False)
        self.register_buffer("band", band, persistent=False)
        # 1 where channel a of the A = H dh belongs to head h, for the step's batched products
        owner = torch.arange(config.attn_dim) // config.head_dim
        mask = (torch.arange(config.num_heads)[:, None] == owner[None, :]).float()  # (H, A)
        self.register_buffer("head_mask", mask, persistent=False)
        self.register_buffer("head_mask_3d", mask[:, :, None].contiguous(), persistent=False)

    def forward(
        self, h: Tensor, batch: int, steps: int, cache: Tensor, mask: Tensor | None, see_cache: bool = True
    ) -> tuple[Tensor, Tensor]:
        """h (B T, D): the rows of ``batch`` sequences of ``steps`` steps, cache (B, C, 2A) ->
        (B T, D) rows and the next cache (B, C, 2A). ``mask`` and ``see_cache`` as
        ``sequence_masks`` gives them (without ``see_cache`` the queries attend to the chunk's own
        T keys only). Keys and values join the cache separately: the gradient of a slice of one
        joint tensor would cost a zero-filled full-size tensor per slice, twice under MAML."""
        width, heads, cache_len = self.attn_dim, self.num_heads, self.cache_len
        qkv = linear_rows(h, self.qkv.weight, self.qkv.bias)  # (B T, 3A): q | k | v, head-major
        qkv = qkv.reshape(batch, steps, -1)
        q, k, v = qkv.reshape(batch, steps, 3, heads, -1).unbind(dim=2)  # (B, T, H, dh)
        q = q / math.sqrt(self.head_dim)
        if see_cache:
            per_head = (batch, cache_len, heads, self.head_dim)
            k_all = torch.cat([cache[..., :width].reshape(per_head), k], dim=1)  # (B, C + T, H, dh)
            v_all = torch.cat([cache[..., width:].reshape(per_head), v], dim=1)
            block = min(steps, cache_len + 1)  # Q queries per block, against Q + C keys
            att = banded_attention(q, k_all, v_all, self._bias(block, 0, block + cache_len), mask)
        else:  # (B, T, H, dh)
            att = chunk_attention(q, k, v, self._bias(steps, cache_len, cache_len + steps), mask)
        out = linear_rows(att.reshape(batch * steps, -1), self.out.weight, self.out.bias)
        # the next cache: the last C steps of the cache followed by the chunk's keys | values
        kv = qkv[..., width:]  # (B, T, 2A)
        if steps < cache_len:
            return out, torch.cat([cache[:, steps:], kv], dim=1)
        return out, kv[:, steps - cache_len :].contiguous()  # a copy: a view keeps all T steps

    def _bias(self, block: int, start: int, stop: int) -> Tensor:
        """(H, Q, stop - start): the position bias of Q = ``block`` queries against the key
        positions start .. stop - 1 of a block (``band_tables``), -inf outside the band."""
        index = self.bias_index[:block, start:stop]
        return torch.where(self.band[:block, start:stop], self.rel_bias[:, index], float("-inf"))

    def step(self, h: Tensor, cache: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """One query per head against the W - 1 cached keys and its own key: h (B, D) normalised,
        cache (B, C, 2A) keys | values oldest first, mask (B, 1, C + 1) or None (``step_mask``) ->
        (B, D) and keys | values (B, C + 1, 2A), the step's last.

        Three batched products on the cache's own (slot, channel) layout, no per-head copy: the
        query spread block-diagonally over its heads (B, H, A) against the keys gives the logits
        (B, H, C + 1); every head's weights against every head's values give (B, H, A), of which
        the output projection, masked per head (H A, D), reads each head's own channels.
        """
        batch, width = h.shape[0], self.attn_dim
        qkv = F.linear(h, self.qkv.weight, self.qkv.bias)  # (B, 3A)
        kv_all = torch.cat([cache, qkv[:, None, width:]], dim=1)  # (B, C + 1, 2A)
        q = qkv[:, None, :width] * self.head_mask  # (B, H, A), zero off its head
        bias = self.rel_bias.flip(-1)  # (H, C + 1): slot s holds offset C - s
        if mask is not None:
            bias = bias + mask  # (B, H, C + 1)
        keys = kv_all[..., :width].transpose(1, 2)  # (B, A, C + 1)
        logits = torch.baddbmm(bias, q, keys, alpha=1 / math.sqrt(self.head_dim))
        att = torch.bmm(logits.softmax(dim=-1), kv_all[..., width:])  # (B, H, A)
        out = self.out
        w_out = (out.weight.t() * self.head_mask_3d).reshape(-1, out.weight.shape[0])
        return torch.addmm(out.bias, att.reshape(batch, -1), w_out), kv_all  # w_out (H A, D)


class Block(nn.Module):
    """Pre-norm decoder block: h + Attn(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_attn = LayerNorm(config.hidden_dim)
        self.attn = Attention(config)
        self.norm_mlp = LayerNorm(config.hidden_dim)
        width, hidden = config.hidden_dim, config.mlp_dim
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self, h: Tensor, batch: int, steps: int, cache: Tensor, mask: Tensor | None, see_cache: bool = True
    ) -> tuple[Tensor, Tensor]:
        """(B T, D) rows of ``batch`` sequences of ``steps`` steps -> (B T, D) rows and the next
        cache (see ``Attention.forward``), every linear layer one ``layers.linear_rows``."""
        a, kv = self.attn(self.norm_attn(h), batch, steps, cache, mask, see_cache)
        h = h + a
        up, gelu, down = cast(tuple[nn.Linear, nn.GELU, nn.Linear], tuple(self.mlp))
        m = gelu(linear_rows(self.norm_mlp(h), up.weight, up.bias))  # (B T, M)
        # the second-order gradient at the narrow (B T, D) output, not at the GELU's (B T, M)
        return h + linear_rows(m, down.weight, down.bias, transposed_grad="output"), kv

    def step(self, h: Tensor, cache: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``forward`` for one step, h (B, D) (see ``Attention.step``), calling the linear layers'
        functions directly: a module call costs more than a one-step matmul."""
        norm = self.norm_attn
        a, kv_all = self.attn.step(layer_norm(h, norm.weight, norm.bias, norm.eps), cache, mask)
        h = h + a
        up, _, down = cast(tuple[nn.Linear, nn.GELU, nn.Linear], tuple(self.mlp))
        norm = self.norm_mlp
        m = gelu_native(F.linear(layer_norm(h, norm.weight, norm.bias, norm.eps), up.weight, up.bias))
        return h + F.linear(m, down.weight, down.bias), kv_all


class Transformer(SequenceModel):
    """Causal decoder-only transformer with windowed attention; state is a bounded KV cache.

    State: a tuple ``(valid, cache_1, ..., cache_L)``, ``valid`` (B, W-1) bool and each layer's
    keys | values (B, W-1, 2A), A = heads * head_dim.
    """

    name = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.cache_len = config.cache_len
        self.num_layers = config.num_layers
        self.kv_width = 2 * config.attn_dim
        self.encoder = nn.Linear(config.input_dim, config.hidden_dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = LayerNorm(config.hidden_dim)
        self.head = nn.Linear(config.hidden_dim, config.output_dim)
        self._step_cache: WeightCache[TransformerWeights] = WeightCache()

    def _fuse_step_weights(self) -> TransformerWeights:
        return fuse_transformer(self)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        shape = (batch_size, self.cache_len, self.kv_width)
        dtype = self.encoder.weight.dtype  # a float64 model gets a float64 cache
        valid = torch.zeros(batch_size, self.cache_len, dtype=torch.bool, device=device)
        caches = (torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers))
        return (valid, *caches)

    def _run(self, x: Tensor, state: State, segment: Tensor | None) -> tuple[Tensor, State]:
        """x (B, T, in) from ``state``; ``segment`` (B, C + T) episode ids or None (one episode).
        The layers share one mask, as small as the cache allows (``sequence_masks``)."""
        cache = self.cache_len
        batch, steps, _ = x.shape
        encoder, head = self.encoder, self.head
        h = linear_rows(x.reshape(-1, x.shape[-1]), encoder.weight, encoder.bias)  # (B T, D)
        valid_all, mask, see_cache = sequence_masks(state[0], steps, segment, h.dtype)
        caches = []
        for block, kv in zip(self.blocks, state[1:], strict=True):
            h, kv = block(h, batch, steps, kv, mask, see_cache)
            caches.append(kv)
        y = linear_rows(self.norm(h), head.weight, head.bias).reshape(batch, steps, -1)

        valid = valid_all[:, valid_all.shape[1] - cache :]  # (B, C)
        if segment is None:
            # The only empty slots are the state's own, shifted: they hold zeros already.
            return y, (valid, *caches)
        # Steps before the last reset are forgotten, and zeroed: empty slots hold zeros (a
        # canonical state).
        valid = valid & (segment[:, segment.shape[1] - cache :] == segment[:, -1:])
        keep = valid[:, :, None]
        return y, (valid, *(torch.where(keep, kv, 0.0) for kv in caches))

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run(x, state, None)

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x (B, in) -> y (B, out): ``_run`` with T = 1 without its block machinery.

        The cache shifts by one slot: the oldest step leaves, this step enters as valid. Empty
        slots shift too and keep their zeros, and the step's own key is always valid, so a
        canonical state (zeros where not ``valid``) stays canonical with no masking of the cache.
        """
        mask, valid = step_mask(state[0], state[1].dtype)  # mask (B, 1, C + 1) or None
        fused = cached_step_weights(self, self._step_cache, self._fuse_step_weights)
        if fused is not None:  # no autograd, no transform: the fused weights (models.fused_step)
            y, caches = transformer_step(fused, x, state[1:], mask)
            return y, (valid, *caches)
        return self._differentiable_step(x, valid, state[1:], mask)

    def _differentiable_step(
        self, x: Tensor, valid: Tensor, caches: tuple[Tensor, ...], mask: Tensor | None
    ) -> tuple[Tensor, State]:
        """One step from the parameters as they are: what autograd and vmap see. ``valid`` is
        the next state's; ``mask`` (B, 1, C + 1) hides the empty slots, None if there are none."""
        encoder = self.encoder
        h = F.linear(x, encoder.weight, encoder.bias)
        new_caches = []
        for block, kv in zip(cast(list[Block], self.blocks), caches, strict=True):
            h, kv_all = block.step(h, kv, mask)
            new_caches.append(kv_all[:, 1:])  # drop the oldest slot
        head, norm = self.head, self.norm
        y = F.linear(layer_norm(h, norm.weight, norm.bias, norm.eps), head.weight, head.bias)
        return y, (valid, *new_caches)

    def _forward_sequence_with_reset(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        # A reset at t starts segment k + 1; the cache is segment 0, so it is hidden after one.
        episode = torch.cumsum(reset.long(), dim=1)  # (B, T)
        segment = torch.cat([episode.new_zeros(x.shape[0], self.cache_len), episode], dim=1)
        return self._run(x, state, segment)

