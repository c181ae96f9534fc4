"""``ssm``: a stack of diagonal linear recurrent layers (LRU / S5 family) with a parallel scan.

Each layer (Orvieto et al. 2023, Fig. 1; Smith et al. 2023) maps x (B, T, H) to x + block(x):

    z_t = LayerNorm(x_t)
    h_t = lambda * h_{t-1} + gamma * (B z_t)       lambda, gamma, B complex; diagonal lambda (N,)
    u_t = Re(C h_t) + D * z_t                      C complex (H, N), D real (H,)
    block(x)_t = GLU(GELU(u_t)) = W_a v_t * sigmoid(W_b v_t),  v_t = GELU(u_t)

with lambda = exp(-exp(nu) + i exp(theta)) (|lambda| < 1 for every value of nu), initialised
uniformly on the ring r_min <= |lambda| <= r_max, and gamma = exp(gamma_log) initialised to
sqrt(1 - |lambda|^2) so that the state's variance does not grow with the memory length.
An input encoder Linear(input_dim, H) comes first and an output head Linear(H, output_dim) last.
Complex numbers are carried as (real, imaginary) pairs; the state of a layer is a real (B, N, 2)
tensor.

Sequence mode has no loop over time: ``models.kernels.scan.chunked_scan`` gives all states, and
the whole stack runs in the scan's chunk-major token order (per-token layers do not care about
order). A sequence of at most one chunk without resets (MAML's windows) takes
``models.kernels.two_level_scan`` in its block-major order instead. Reset is the scan's a_t := 0
(Lu et al. 2023). Step mode is the O(H N) recurrence; without autograd (planning, rollouts) it
runs on fused weights formed once (``models.fused_step``).

References:
    Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences" (LRU), ICML 2023.
    Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling" (S5),
    ICLR 2023.
    Lu et al., "Structured State Space Models for In-Context Reinforcement Learning", NeurIPS 2023.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models._functorch import transforms_active
from models.base import ModelConfig, SequenceModel, State
from models.fused_step import SSMWeights, WeightCache, cached_step_weights, fuse_ssm, ssm_step
from models.kernels.scan import chunked_scan, to_chunks
from models.kernels.two_level_scan import block_shape, two_level_scan
from models.layers import LayerNorm, gelu_native, linear_rows


@dataclasses.dataclass(frozen=True)
class SSMConfig(ModelConfig):
    """Attributes:
    state_dim: complex state channels N per layer; kept fixed while ``hidden_dim`` is sized.
    num_layers: stacked recurrent blocks.
    r_min: smallest |lambda| of the ring initialisation (fastest forgetting).
    r_max: largest |lambda| of the ring initialisation (memory of about 1 / (1 - r_max) steps).
    max_phase: arg(lambda) is initialised uniformly in [0, max_phase].
    chunk_size: steps per chunk of the parallel scan; changes speed only.
    """

    state_dim: int = 32
    num_layers: int = 2
    r_min: float = 0.4
    r_max: float = 0.99
    max_phase: float = 2 * math.pi
    chunk_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive_ints("state_dim", "num_layers")
        if not isinstance(self.chunk_size, int) or isinstance(self.chunk_size, bool) or self.chunk_size < 2:
            raise ValueError(f"SSMConfig.chunk_size: expected an int >= 2, got {self.chunk_size!r}")
        if not 0.0 <= self.r_min < self.r_max < 1.0:
            raise ValueError(
                "SSMConfig.r_min, r_max: expected 0 <= r_min < r_max < 1, "
                f"got r_min={self.r_min!r}, r_max={self.r_max!r}"
            )
        if not 0.0 < self.max_phase <= 2 * math.pi:
            raise ValueError(f"SSMConfig.max_phase: expected a value in (0, 2 pi], got {self.max_phase!r}")


class DiagonalRecurrence(nn.Module):
    """h_t = lambda h_{t-1} + gamma B z_t, u_t = Re(C h_t) + D z_t with LRU parameters; state (B, N, 2)."""

    def __init__(self, width: int, states: int, r_min: float, r_max: float, max_phase: float) -> None:
        super().__init__()
        # Ring initialisation (Orvieto et al. 2023, Lemma 3.2): |lambda|^2 ~ U[r_min^2, r_max^2].
        u1, u2 = torch.rand(states), torch.rand(states)
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2 + 1e-4))
        magnitude = torch.exp(-torch.exp(self.nu_log.detach()))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - magnitude**2)))
        self.B = nn.Parameter(torch.randn(states, 2, width) / math.sqrt(2 * width))  # [n, (re, im), h]
        self.C = nn.Parameter(torch.randn(width, states, 2) / math.sqrt(states))  # [h, n, (re, im)]
        self.D = nn.Parameter(torch.randn(width))

    def decay(self) -> tuple[Tensor, Tensor]:
        """log|lambda| and arg(lambda), each (N,); log|lambda| <= -1e-6 for any parameters."""
        nu_log = self.nu_log
        # -_MIN_DECAY - exp(nu) is -(exp(nu) + _MIN_DECAY) exactly (rounding is symmetric).
        log_mag = torch.sub(_constants(nu_log)[1], torch.exp(torch.clamp_max(nu_log, _NU_LOG_MAX)))
        return log_mag, torch.exp(self.theta_log)

    def _in_proj(self) -> Tensor:
        """gamma * B as a real (2N, H) matrix, rows ordered (state, re/im)."""
        b = self.B
        return (b * torch.exp(self.gamma_log).reshape(-1, 1, 1)).reshape(-1, b.shape[-1])

    def _out_proj(self) -> Tensor:
        """Re(C h) = C_re h_re - C_im h_im as a real (H, 2N) matrix, columns (state, re/im)."""
        c = self.C
        return (c * _constants(c)[0]).reshape(c.shape[0], -1)

    def sequence(self, z: Tensor, h0: Tensor, layout: tuple[int, ...], scan: _Scan) -> tuple[Tensor, Tensor]:
        """All steps at once: z (tokens, H) in the token order ``layout`` describes (as ``scan``, a
        scan of ``models.kernels``, takes it), h0 (B, N, 2) -> u (tokens, H), every state (N, 2, *layout)."""
        states = self.B.shape[0]
        x = (self._in_proj() @ z.T).reshape(states, 2, *layout)  # gamma B z
        log_mag, phase = self.decay()
        h = scan(log_mag, phase, x, h0.permute(1, 2, 0))
        read = h.reshape(2 * states, -1).T @ self._out_proj().T  # Re(C h), (tokens, H)
        # Product and sum rather than addcmul on many tokens: see SSMBlock.mix_tokens.
        u = read + z * self.D if _unfused(z.shape[0]) else torch.addcmul(read, z, self.D)
        return u, h

    def step(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """One step: z (B, H), h (B, N, 2) -> u (B, H), h (B, N, 2).

        lambda h is the complex product (a_re h_re - a_im h_im, a_re h_im + a_im h_re), formed as
        a_re h - (a_im, -a_im) h_swapped: four ops on the (B, N, 2) state.
        """
        log_mag, phase = self.decay()
        mag = torch.exp(log_mag)
        a_re, a_im = mag * torch.cos(phase), mag * torch.sin(phase)
        a_re, a_swap = a_re.unsqueeze(-1), a_im.unsqueeze(-1) * _constants(a_im)[0]  # (N, 1), (N, 2)
        drive = F.linear(z, self._in_proj()).reshape(h.shape)  # gamma B z, (B, N, 2)
        h = torch.addcmul(h * a_re, h.flip(-1), a_swap, value=-1) + drive
        u = torch.addcmul(F.linear(h.reshape(h.shape[0], -1), self._out_proj()), z, self.D)
        return u, h


class SSMBlock(nn.Module):
    """Pre-norm residual block: x + GLU(GELU(recurrence(LayerNorm(x))))."""

    def __init__(self, config: SSMConfig) -> None:
        super().__init__()
        width = config.hidden_dim
        self.norm = LayerNorm(width)  # composite under vmap: fused layer_norm's batching rule is wrong
        self.recurrence = DiagonalRecurrence(width, config.state_dim, config.r_min, config.r_max, config.max_phase)
        # Two Linear layers rather than one of width 2H: the gate then runs on contiguous memory
        # (sigmoid on a strided half of a (tokens, 2H) tensor is several times slower on CPU).
        self.glu_value = nn.Linear(width, width)
        self.glu_gate = nn.Linear(width, width)

    def mix(self, x: Tensor, u: Tensor) -> Tensor:
        """The residual update from the recurrence output u, (..., H)."""
        v = gelu_native(u)
        value, gate = self.glu_value, self.glu_gate
        # F.linear, not the modules' calls: the per-call hook machinery costs more than a
        # one-step matmul (functional_call still swaps the weights read here).
        gate_open = torch.sigmoid(F.linear(v, gate.weight, gate.bias))
        return torch.addcmul(x, F.linear(v, value.weight, value.bias), gate_open)

    def mix_tokens(self, x: Tensor, u: Tensor) -> Tensor:
        """``mix`` for many tokens at once or under torch.func transforms (see ``_unfused``),
        (tokens, H): x + value * gate as a product and a sum, and the linear layers as
        ``linear_rows`` (a product and a sum under transforms, where vmap runs addmm with an
        extra pass)."""
        v = F.gelu(u)
        value, gate = self.glu_value, self.glu_gate
        gate_open = torch.sigmoid(linear_rows(v, gate.weight, gate.bias, "output"))
        return x + linear_rows(v, value.weight, value.bias, "output") * gate_open


class SSM(SequenceModel):
    """Encoder -> ``num_layers`` x SSMBlock -> head; state: one (B, N, 2) tensor per layer."""

    name = "ssm"
    config_class = SSMConfig

    def __init__(self, config: SSMConfig) -> None:
        super().__init__(config)
        self.state_dim, self.chunk_size = config.state_dim, config.chunk_size
        self.encoder = nn.Linear(config.input_dim, config.hidden_dim)
        self.blocks = nn.ModuleList(SSMBlock(config) for _ in range(config.num_layers))
        self.head = nn.Linear(config.hidden_dim, config.output_dim)
        self._step_cache: WeightCache[SSMWeights | None] = WeightCache()

    def _blocks(self) -> list[SSMBlock]:
        return [cast(SSMBlock, block) for block in self.blocks]

    def _fuse_step_weights(self) -> SSMWeights | None:
        return fuse_ssm(self)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        dtype = self.encoder.weight.dtype  # the state follows the model's precision
        return tuple(torch.zeros(batch_size, self.state_dim, 2, device=device, dtype=dtype) for _ in self.blocks)

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        fused = cached_step_weights(self, self._step_cache, self._fuse_step_weights)
        if fused is not None:  # no autograd, no transform: the fused weights (models.fused_step)
            return ssm_step(fused, x, state)
        return self._differentiable_step(x, state)

    def _differentiable_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One step from the parameters as they are: what autograd and vmap see."""
        encoder, head = self.encoder, self.head
        h = F.linear(x, encoder.weight, encoder.bias)  # (B, H)
        new_state = []
        for block, s in zip(self._blocks(), state, strict=True):
            u, s = block.recurrence.step(block.norm(h), s)
            h = block.mix(h, u)
            new_state.append(s)
        return F.linear(h, head.weight, head.bias), tuple(new_state)

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run_segments(x, state, None)

    def _forward_sequence_with_reset(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        return self._run_segments(x, state, reset)

    def _run_segments(self, x: Tensor, state: State, reset: Tensor | None) -> tuple[Tensor, State]:
        """``_run`` over consecutive segments of about ``_SEGMENT_TOKENS`` tokens, the state carried:
        exact, and each op's tensors stay cache-sized (on one long sequence the time grows faster than T)."""
        batch, steps, _ = x.shape
        span = max(self.chunk_size, _SEGMENT_TOKENS // max(batch, 1) // self.chunk_size * self.chunk_size)
        if steps <= span:
            return self._run(x, state, reset)
        outputs = []
        for start in range(0, steps, span):
            part = reset[:, start : start + span] if reset is not None else None
            y, state = self._run(x[:, start : start + span], state, part)
            outputs.append(y)
        return torch.cat(outputs, dim=1), state

    def _run(self, x: Tensor, state: State, reset: Tensor | None) -> tuple[Tensor, State]:
        """The stack over x (B, T, in) in the chunk-major token order of ``chunked_scan``."""
        batch, steps, _ = x.shape
        if reset is None and steps <= self.chunk_size:
            return self._run_one_chunk(x, state)
        size = min(self.chunk_size, steps)
        chunks = -(-steps // size)
        pad = chunks * size - steps
        if pad:  # steps appended after the last one cannot change it; their outputs are dropped
            x = F.pad(x, (0, 0, 0, pad))
            reset = F.pad(reset, (0, pad)) if reset is not None else None
        resets = to_chunks(reset, size) if reset is not None else None  # (C, B, chunks)
        # step c * C + s of row b at [s, b, c], flat: (C * B * chunks, in)
        tokens = x.reshape(batch, chunks, size, -1).permute(2, 0, 1, 3).reshape(size * batch * chunks, -1)
        s, c = (steps - 1) % size, (steps - 1) // size
        h, new_state = self._stack(
            self.encoder(tokens), state, (size, batch, chunks),
            lambda log_mag, phase, x_, h0: chunked_scan(log_mag, phase, x_, h0, resets), lambda h: h[:, :, s, :, c],
        )  # fmt: skip
        y = self.head(h).reshape(size, batch, chunks, -1).permute(1, 2, 0, 3).reshape(batch, chunks * size, -1)
        return (y[:, :steps] if pad else y), new_state

    def _run_one_chunk(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """``_run`` for T <= chunk_size without reset, in the block-major order of ``two_level_scan``."""
        batch, steps, _ = x.shape
        size, blocks = block_shape(steps)
        pad = size * blocks - steps
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        # step j * C + s of row b at [s, j, b], flat: (C * blocks * B, in)
        tokens = x.reshape(batch, blocks, size, -1).permute(2, 1, 0, 3).reshape(size * blocks * batch, -1)
        s, j = (steps - 1) % size, (steps - 1) // size
        encoder, head = self.encoder, self.head
        h = linear_rows(tokens, encoder.weight, encoder.bias, "output")  # (tokens, H)
        h, new_state = self._stack(h, state, (size, blocks, batch), two_level_scan, lambda h: h[:, :, s, j])
        y = linear_rows(h, head.weight, head.bias, "output").reshape(size, blocks, batch, -1).permute(2, 1, 0, 3)
        y = y.reshape(batch, blocks * size, -1)
        return (y[:, :steps] if pad else y), new_state

    def _stack(
        self, h: Tensor, state: State, layout: tuple[int, ...], scan: _Scan, last: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, State]:
        """The blocks over tokens h (tokens, H) in ``layout``; ``last`` picks every row's state
        after its last real step, (N, 2, B), from a layer's states (N, 2, *layout)."""
        new_state = []
        for block, s in zip(self._blocks(), state, strict=True):
            u, states = block.recurrence.sequence(block.norm(h), s, layout, scan)
            h = block.mix_tokens(h, u) if _unfused(h.shape[0]) else block.mix(h, u)
            new_state.append(last(states).permute(2, 0, 1))
        return h, tuple(new_state)


# ---- numerical details ----------------------------------------------------------------------


_NU_LOG_MAX = math.log(30.0)
"""Above this nu_log, |lambda| = exp(-exp(nu_log)) < 1e-13 is zero for every purpose; clamping
there keeps log|lambda| finite (so lambda^0 = 1 exactly) after any gradient step."""

_MIN_DECAY = 1e-6
"""log|lambda| <= -_MIN_DECAY, so |lambda| <= 0.999999 < 1 even where exp(nu_log) underflows."""


_SEGMENT_TOKENS = 8192
"""Sequence mode runs at most about this many tokens (B x steps) at once; see ``_run_segments``."""

_UNFUSED_MIN_TOKENS = 4096
"""From this many tokens sequence mode forms x + a * b as a product and a sum, not addcmul (see
``SSMBlock.mix_tokens``); on fewer, op count is what costs (MAML's per-task loop, 100 tokens)."""


_CONSTANTS: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

_Scan = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""A scan of ``models.kernels``: (log|lambda| (N,), arg(lambda) (N,), x (N, 2, *layout), h0 (N, 2, B)) -> states."""


def _constants(like: Tensor) -> tuple[Tensor, Tensor]:
    """The constants (1, -1) and -_MIN_DECAY (0-d) in ``like``'s dtype and device.

    Multiplying a trailing (re, im) pair by (1, -1) conjugates it. Made once per dtype and
    device: a new small tensor costs several ops, and even a Python float operand costs a
    conversion on every call, which one step of the model pays a dozen times over.
    """
    key = (like.dtype, like.device)
    found = _CONSTANTS.get(key)
    if found is not None:
        return found
    with torch.inference_mode(False):  # usable outside inference mode, whoever asks first
        made = (
            torch.tensor([1.0, -1.0], dtype=like.dtype, device=like.device),
            torch.tensor(-_MIN_DECAY, dtype=like.dtype, device=like.device),
        )
    if all(type(t) is Tensor for t in made):  # not a tracing mode's fake tensors
        _CONSTANTS[key] = made
    return made


def _unfused(tokens: int) -> bool:
    """Whether sequence mode forms x + a * b as a product and a sum rather than addcmul: from
    ``_UNFUSED_MIN_TOKENS`` tokens (see ``SSMBlock.mix_tokens``), and always under torch.func
    transforms, where addcmul's backward pass over every task's tensor costs more than the op
    it saves (MAML's vmapped meta-update)."""
    return tokens >= _UNFUSED_MIN_TOKENS or transforms_active()
