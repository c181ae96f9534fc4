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
steps side by side, (B, W-1, 2 A) with A = heads * d_head (keys first, head-major). One tensor per
layer: a step writes it with one concatenation, nothing is stacked. Shapes never change, so a step
costs O(W * d) and states stack under ``torch.func.vmap``. Invalid slots hold zeros, so a state
depends only on the steps it remembers.

Sequence mode prepends the cache to the chunk's keys and computes the banded attention in blocks
of ``Q = min(T, W)`` queries, each against its ``Q + W - 1`` keys: memory O(T * W), not O(T^2),
with no Python loop over time. A reset is native: a key is visible only from the same episode
(segment ids from a cumulative sum of ``reset``). When no cache slot is valid (a fresh state, as
every MAML support and query window starts from) a chunk of T <= W steps attends to its own T
keys only, and when every slot is valid no mask is formed (``cache_fill`` reads which, also
under vmap). The residual stream runs as (B T, D) rows and each linear layer is one
``layers.linear_rows``, which under MAML's vmapped second order puts the transposed gradient
that autograd makes of a weight's gradient where it costs least (never on the MLP's wide GELU
output). Step mode has its own short path: one query per head against the W - 1 cached keys
and its own, and the cache shifted by one slot; a handful of batched matrix products on the
cache's own layout (see ``Attention.step``). Without autograd and outside torch.func
transforms (MPC planning, rollouts) it runs on fused weights formed once and cached while the
parameters stay the same (``_fused_step``); a full cache needs no mask.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SequenceModel, State
from models.layers import LayerNorm, WeightCache, gelu_native, layer_norm, linear_rows


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
    raw = valid
    while torch._C._functorch.is_functorch_wrapped_tensor(raw):
        raw = torch._C._functorch.get_unwrapped(raw)
    if type(raw) is not Tensor or raw.device.type == "meta":
        return None
    if bool(raw.all()):  # also a cache of no slots (W = 1)
        return "full"
    return None if bool(raw.any()) else "empty"


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
        self,
        h: Tensor,
        batch: int,
        steps: int,
        cache: Tensor,
        mask: Tensor | None,
        see_cache: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """h (B T, D): the rows of ``batch`` sequences of ``steps`` steps, cache (B, C, 2A) ->
        (B T, D) rows and the next cache (B, C, 2A).

        ``see_cache`` False: the cache holds no valid slot and T <= W, so each query attends to
        the chunk's own keys only (``chunk_attention``, T keys instead of C + T); ``mask`` is then
        None or a ``segment_mask``, else a ``window_mask`` (None: nothing to hide).
        Keys and values are concatenated to the cache separately (not as one keys | values
        tensor): the gradient of a slice of a joint tensor would cost a zero-filled full-size
        tensor per slice, in the backward and again in MAML's second-order backward.
        """
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
        else:
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
        return torch.where(
            self.band[:block, start:stop],
            self.rel_bias[:, self.bias_index[:block, start:stop]],
            float("-inf"),
        )

    def step(self, h: Tensor, cache: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """One query per head against the W - 1 cached keys and its own key.

        Args:
            h: (B, D) the normalised step.
            cache: (B, C, 2A) keys | values, oldest slot first.
            mask: (B, 1, C + 1) additive, -inf for empty cache slots (the own key is visible);
                None when every slot is valid.

        Returns:
            (B, D) attention output and keys | values (B, C + 1, 2A), the step's last.

        Shapes:
            Three batched matmuls on the cache's own (slot, channel) layout, with no copy into
            a per-head layout: the query spread block-diagonally over its heads, (B, H, A),
            against the keys (B, C + 1, A) gives the logits (B, H, C + 1); every head's weights
            against every head's values give (B, H, A), of which the output projection, masked
            per head (H A, D), reads only each head's own channels. H times the (tiny)
            arithmetic of per-head products, but a few large ops instead of many small ones.
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
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_dim, config.mlp_dim),
            nn.GELU(),
            nn.Linear(config.mlp_dim, config.hidden_dim),
        )

    def forward(
        self,
        h: Tensor,
        batch: int,
        steps: int,
        cache: Tensor,
        mask: Tensor | None,
        see_cache: bool = True,
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
        self._step_cache: WeightCache[_FusedStep] = WeightCache()

    def _step_leaves(self) -> list[Tensor | None]:
        """Every parameter the fused step weights are formed from, looked up afresh
        (``functional_call`` swaps parameters in and out; a submodule may have been replaced), in
        a fixed order. Read from the modules' dicts: ``nn.Module.__getattr__`` costs more."""
        modules = self._modules
        leaves: list[Tensor | None] = [*cast(nn.Module, modules["encoder"])._parameters.values()]
        for block in cast(nn.Module, modules["blocks"])._modules.values():
            for sub in cast(nn.Module, block)._modules.values():
                leaves += cast(nn.Module, sub)._parameters.values()
                for leaf in cast(nn.Module, sub)._modules.values():  # qkv, out; the MLP's layers
                    leaves += cast(nn.Module, leaf)._parameters.values()
        leaves += cast(nn.Module, modules["norm"])._parameters.values()
        leaves += cast(nn.Module, modules["head"])._parameters.values()
        return leaves

    def _fuse_step_weights(self) -> _FusedStep:
        """The step's weights in the form ``_fused_step`` takes them, formed now (copies, never
        views of the parameters: a view would hold on to a parameter that ``swap_tensors`` may
        want to replace)."""
        layers = []
        for block in cast(list[Block], self.blocks):
            attn, (up, _, down) = block.attn, cast(tuple[nn.Linear, nn.GELU, nn.Linear], tuple(block.mlp))
            width = attn.attn_dim
            w_q, w_kv = attn.qkv.weight[:width], attn.qkv.weight[width:]  # (A, D), (2A, D)
            b_q, b_kv = attn.qkv.bias[:width], attn.qkv.bias[width:]
            # the query spread block-diagonally over its heads, (H, A), scaled by 1 / sqrt(dh)
            spread = attn.head_mask / math.sqrt(attn.head_dim)  # (H, A)
            qkv = torch.cat([(w_q.t()[:, None, :] * spread).flatten(1), w_kv.t()], dim=1)
            qkv_bias = torch.cat([(b_q * spread).flatten(), b_kv])
            out = (attn.out.weight.t() * attn.head_mask_3d).flatten(0, 1)  # (H A, D)
            layers.append(
                _FusedLayer(
                    _norm_weights(block.norm_attn),
                    qkv,
                    qkv_bias,
                    attn.rel_bias.flip(-1),
                    out,
                    attn.out.bias.clone(),
                    _norm_weights(block.norm_mlp),
                    up.weight.t().contiguous(),
                    up.bias.clone(),
                    down.weight.t().contiguous(),
                    down.bias.clone(),
                )
            )
        encoder, head = self.encoder, self.head
        return _FusedStep(
            encoder.weight.t().contiguous(),
            encoder.bias.clone(),
            tuple(layers),
            _norm_weights(self.norm),
            head.weight.t().contiguous(),
            head.bias.clone(),
        )

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        shape = (batch_size, self.cache_len, self.kv_width)
        dtype = self.encoder.weight.dtype  # a float64 model gets a float64 cache
        valid = torch.zeros(batch_size, self.cache_len, dtype=torch.bool, device=device)
        caches = (torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers))
        return (valid, *caches)

    def _run(self, x: Tensor, state: State, segment: Tensor | None) -> tuple[Tensor, State]:
        """x (B, T, in) from ``state``; ``segment`` (B, C + T) episode ids or None (one episode).

        The attention's mask is shared by the layers and as small as the cache allows: none for
        a full cache (or an empty one seen by a single block), one row for every batch row when
        the cache is empty, per row otherwise. An empty cache (a fresh state, as every MAML
        window starts from) is left out of a single block's keys altogether.
        """
        cache = self.cache_len
        batch, steps, _ = x.shape
        valid_all = torch.cat([state[0], state[0].new_ones(batch, steps)], dim=1)
        encoder, head = self.encoder, self.head
        h = linear_rows(x.reshape(-1, x.shape[-1]), encoder.weight, encoder.bias)  # (B T, D)
        fill = cache_fill(state[0])
        see_cache = fill != "empty" or steps > cache + 1
        mask: Tensor | None = None
        if not see_cache:
            if segment is not None:
                mask = segment_mask(segment[:, cache:], h.dtype)
        elif segment is not None or fill is None:
            mask = window_mask(valid_all, segment, cache + 1, h.dtype)
        elif fill == "empty":  # the same for every row: only the first block's cache is hidden
            seen = torch.arange(cache + steps, device=x.device)[None, :] >= cache  # (1, C + T)
            mask = window_mask(seen, None, cache + 1, h.dtype)
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
        A full cache (every slot valid, as after W - 1 steps of an episode) needs no mask at
        all; that is checked outside torch.func transforms only, where a tensor's value may
        decide the path.
        """
        valid = state[0]
        mask: Tensor | None = None
        plain = not torch._C._are_functorch_transforms_active()
        if not plain or not bool(valid.all()):
            seen = F.pad(valid, (0, 1), value=True)  # (B, C + 1): the cache, then this step
            zero = torch.zeros((), dtype=state[1].dtype)  # the model's: a bf16 model stays bf16
            mask = torch.where(seen, zero, float("-inf")).unsqueeze(1)  # (B, 1, C + 1)
            valid = seen[:, 1:]
        # Without autograd and outside torch.func transforms nothing differentiates or batches
        # the weights, so the fused ones can be formed once and reused (planning, rollouts).
        if plain and not torch.is_grad_enabled():
            fused = self._step_cache.get(self._step_leaves(), self._fuse_step_weights)
            if fused is not None:
                y, caches = _fused_step(fused, x, state[1:], mask)
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

    def _forward_sequence_with_reset(
        self, x: Tensor, state: State, reset: Tensor
    ) -> tuple[Tensor, State]:
        # A reset at t starts segment k + 1; the cache is segment 0, so it is hidden after one.
        episode = torch.cumsum(reset.long(), dim=1)  # (B, T)
        segment = torch.cat([episode.new_zeros(x.shape[0], self.cache_len), episode], dim=1)
        return self._run(x, state, segment)


class _Norm(NamedTuple):
    """A LayerNorm's weights, copied."""

    weight: Tensor
    bias: Tensor
    eps: float


def _norm_weights(norm: LayerNorm) -> _Norm:
    return _Norm(norm.weight.clone(), norm.bias.clone(), norm.eps)


class _FusedLayer(NamedTuple):
    """One block's step weights, formed by ``Transformer._fuse_step_weights``; linear weights
    stored transposed, as addmm takes them."""

    norm_attn: _Norm
    qkv: Tensor  # (D, H A + 2A): z @ it = [q spread over the heads (H, A), scaled; k; v]
    qkv_bias: Tensor  # (H A + 2A,)
    rel_bias: Tensor  # (H, C + 1): the position bias in slot order (slot s holds offset C - s)
    out: Tensor  # (H A, D): each head's rows read only its own channels
    out_bias: Tensor
    norm_mlp: _Norm
    up: Tensor  # (D, M)
    up_bias: Tensor
    down: Tensor  # (M, D)
    down_bias: Tensor


class _FusedStep(NamedTuple):
    """The whole model's step weights."""

    encoder: Tensor  # (in, D)
    encoder_bias: Tensor
    layers: tuple[_FusedLayer, ...]
    norm: _Norm
    head: Tensor  # (D, out)
    head_bias: Tensor


def _fused_step(
    weights: _FusedStep, x: Tensor, caches: tuple[Tensor, ...], mask: Tensor | None
) -> tuple[Tensor, list[Tensor]]:
    """``Transformer._differentiable_step`` on fused weights (equal to float rounding): per layer
    two LayerNorms, the query spread over its heads and the keys | values from one product,
    the cache written with one concatenation, three batched products for the attention
    (see ``Attention.step``), the MLP. x (B, in), caches (B, C, 2A) -> y (B, out), caches."""
    batch = x.shape[0]
    h = torch.addmm(weights.encoder_bias, x, weights.encoder)  # (B, D)
    new_caches = []
    for layer, kv in zip(weights.layers, caches, strict=True):
        width, spread = kv.shape[2] // 2, layer.out.shape[0]  # A, H A
        n = layer.norm_attn
        z = F.layer_norm(h, (h.shape[1],), n.weight, n.bias, n.eps)
        qkv = torch.addmm(layer.qkv_bias, z, layer.qkv)  # (B, H A + 2A)
        kv_all = torch.cat([kv, qkv[:, None, spread:]], dim=1)  # (B, C + 1, 2A)
        q = qkv[:, :spread].view(batch, -1, width)  # (B, H, A)
        bias = layer.rel_bias if mask is None else layer.rel_bias + mask
        logits = torch.baddbmm(bias, q, kv_all[..., :width].transpose(1, 2))  # (B, H, C + 1)
        att = torch.bmm(logits.softmax(dim=-1), kv_all[..., width:])  # (B, H, A)
        h = h + torch.addmm(layer.out_bias, att.view(batch, spread), layer.out)
        n = layer.norm_mlp
        z = F.layer_norm(h, (h.shape[1],), n.weight, n.bias, n.eps)
        m = gelu_native(torch.addmm(layer.up_bias, z, layer.up))
        h = h + torch.addmm(layer.down_bias, m, layer.down)
        new_caches.append(kv_all[:, 1:])  # drop the oldest slot
    n = weights.norm
    z = F.layer_norm(h, (h.shape[1],), n.weight, n.bias, n.eps)
    return torch.addmm(weights.head_bias, z, weights.head), new_caches
