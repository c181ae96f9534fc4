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

Sequence mode has no loop over time: ``models.scan.chunked_scan`` gives all states with batched
matrix products, the initial state in closed form; the whole stack runs in the scan's
chunk-major token order (the per-token layers do not care about order), so no layer reorders
its activations. A sequence of at most one chunk without resets (MAML's windows) takes
``models.scan.two_level_scan`` instead, in its block-major token order (blocks of about sqrt(T)
steps): three small batched products per layer, which batch well under MAML's vmap. Under
torch.func transforms the sequence paths form linear layers and x + a * b as products and sums
(vmap runs addmm and addcmul's backward with an extra pass). Reset uses the scan's a_t := 0
(Lu et al. 2023), no splitting. Step mode is the O(H N) recurrence; without autograd
(planning, rollouts) it runs on fused weights that are formed once and reused while the
parameters stay the same (``SSM._step_weights``). Complex numbers are carried as (real,
imaginary) pairs; the state of a layer is a real (B, N, 2) tensor.

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
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SequenceModel, State
from models.layers import LayerNorm, WeightCache, gelu_native
from models.scan import block_shape, chunked_scan, to_chunks, two_level_scan

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
    return tokens >= _UNFUSED_MIN_TOKENS or torch._C._are_functorch_transforms_active()


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x @ weight^T + bias: ``F.linear``, or under torch.func transforms a product and a sum:
    vmap runs ``F.linear`` with a bias (addmm) as mm, a product with beta = 1 and an add."""
    if torch._C._are_functorch_transforms_active():
        return x @ weight.T + bias
    return F.linear(x, weight, bias)


def _gelu(u: Tensor) -> Tensor:
    """``gelu_native``, or ``F.gelu`` under torch.func transforms: there ``gelu_native``'s
    transposed view of a small (tokens, H) tensor is a strided view of the batched tensor, on
    which the native kernel is slow (measured under MAML's vmap: ~1.7 ms a call at 16 tasks)."""
    return F.gelu(u) if torch._C._are_functorch_transforms_active() else gelu_native(u)


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
        for name in ("state_dim", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SSMConfig.{name}: expected a positive int, got {value!r}")
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
    """h_t = lambda h_{t-1} + gamma B z_t, u_t = Re(C h_t) + D z_t with LRU parameters.

    Shapes: z (tokens, H) in the scan's chunk-major order; state (B, N, 2).
    """

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

    def sequence(
        self,
        z: Tensor,
        h0: Tensor,
        reset: Tensor | None,
        chunk_shape: tuple[int, int, int],
        last: tuple[int, int],
    ) -> tuple[Tensor, Tensor]:
        """All steps at once.

        Args:
            z: (C * B * chunks, H), tokens in chunk-major order.
            h0: (B, N, 2), the state before the first step.
            reset: optional bool (C, B, chunks).
            chunk_shape: (C, B, chunks).
            last: (position in chunk, chunk) of the last real step.

        Returns:
            u (tokens, H) and the state after the last real step, (B, N, 2).
        """
        u, h = self._through_scan(  # h (N, 2, C, B, chunks)
            z, h0, chunk_shape, lambda log_mag, phase, x, h0_: chunked_scan(log_mag, phase, x, h0_, reset)
        )
        return u, h[:, :, last[0], :, last[1]].permute(2, 0, 1)

    def sequence_one_chunk(
        self, z: Tensor, h0: Tensor, blocks: tuple[int, int, int], last: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """All steps of a sequence of at most one chunk, no reset, tokens in block-major order.

        Args:
            z: (C * blocks * B, H), token (s * blocks + j) * B + b for step j * C + s of row b.
            h0: (B, N, 2), the state before the first step.
            blocks: (C, blocks, B), as ``models.scan.block_shape`` gives C and blocks.
            last: (position in block, block) of the last real step.

        Returns:
            u (tokens, H) and the state after the last real step, (B, N, 2).
        """
        u, h = self._through_scan(z, h0, blocks, two_level_scan)  # h (N, 2, C, blocks, B)
        return u, h[:, :, last[0], last[1]].permute(2, 0, 1)

    def _through_scan(
        self, z: Tensor, h0: Tensor, layout: tuple[int, ...], scan: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Input projection, ``scan`` over the token ``layout``, readout: what ``sequence`` and
        ``sequence_one_chunk`` share.

        Args:
            z: (tokens, H) in the order ``layout`` describes.
            h0: (B, N, 2), the state before the first step.
            layout: the token dimensions as the scan takes them (their product is ``tokens``).
            scan: (log_mag, phase, x (N, 2, *layout), h0 (N, 2, B)) -> states (N, 2, *layout).

        Returns:
            u (tokens, H) and every state, (N, 2, *layout).
        """
        states = self.B.shape[0]
        x = (self._in_proj() @ z.T).reshape(states, 2, *layout)
        log_mag, phase = self.decay()
        h = scan(log_mag, phase, x, h0.permute(1, 2, 0))
        read = h.reshape(2 * states, -1).T @ self._out_proj().T
        # Product and sum rather than addcmul on many tokens: see SSMBlock.mix_tokens.
        u = read + z * self.D if _unfused(z.shape[0]) else torch.addcmul(read, z, self.D)
        return u, h

    def step_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What one step needs from the parameters, formed once per call of the model.

        Returns:
            ``(a_re, a_swap, in_proj, out_proj)``: Re(lambda) as (N, 1); (Im, -Im)(lambda) as
            (N, 2), minus the factor of the swapped state (h_im, h_re); gamma * B as (2N, H);
            the real form of C as (H, 2N).
        """
        log_mag, phase = self.decay()
        mag = torch.exp(log_mag)
        a_re, a_im = mag * torch.cos(phase), mag * torch.sin(phase)
        return a_re.unsqueeze(-1), a_im.unsqueeze(-1) * _constants(a_im)[0], self._in_proj(), self._out_proj()

    def step(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """One step: z (B, H), h (B, N, 2) -> u (B, H), h (B, N, 2).

        lambda h is the complex product (a_re h_re - a_im h_im, a_re h_im + a_im h_re), formed as
        a_re h - (a_im, -a_im) h_swapped: four ops on the (B, N, 2) state.
        """
        a_re, a_swap, in_proj, out_proj = self.step_weights()
        drive = F.linear(z, in_proj).reshape(h.shape)  # (B, N, 2)
        h = torch.addcmul(h * a_re, h.flip(-1), a_swap, value=-1) + drive
        u = torch.addcmul(F.linear(h.reshape(h.shape[0], -1), out_proj), z, self.D)
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
        (tokens, H): x + value * gate as a product and a sum.

        addcmul's backward scales each factor by its ``value`` argument, a full pass over the
        (tokens, H) tensor for each; the plain product's backward does not (measured: fwd+bwd of
        the 50k-param model at B = 32, T = 1024 1-2% faster, T = 256 a few %). One step keeps ``mix``'s single
        fused op, where the op count is what costs.
        """
        v = _gelu(u)
        value, gate = self.glu_value, self.glu_gate
        gate_open = torch.sigmoid(_linear(v, gate.weight, gate.bias))
        return x + _linear(v, value.weight, value.bias) * gate_open


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
        self._step_cache: WeightCache[_FusedStep | None] = WeightCache()

    def _blocks(self) -> list[SSMBlock]:
        return [cast(SSMBlock, block) for block in self.blocks]

    def _step_leaves(self) -> list[Tensor | None]:
        """Every parameter of the modules the fused step weights are formed from, looked up afresh
        (``functional_call`` swaps parameters in and out; a submodule may have been replaced), in
        a fixed order. Read from the modules' dicts: ``nn.Module.__getattr__`` costs more."""
        modules = cast(dict[str, nn.Module], self._modules)
        leaves: list[Tensor | None] = [*modules["encoder"]._parameters.values()]
        for block in cast(dict[str, nn.Module], modules["blocks"]._modules).values():
            for sub in cast(dict[str, nn.Module], block._modules).values():
                leaves += sub._parameters.values()
        leaves += modules["head"]._parameters.values()
        return leaves

    def _step_weights(self) -> _FusedStep | None:
        """The fused one-step weights of the current parameters; None where they cannot be cached.

        Formed once and reused while every parameter they come from stays the same tensor, at
        the same version, over the same memory (``layers.WeightCache``, which says what that does
        and does not see). Call only with autograd off and outside torch.func transforms.
        """
        return self._step_cache.get(self._step_leaves(), self._fuse_step_weights)

    def _fuse_step_weights(self) -> _FusedStep | None:
        """Each layer's step weights for ``_fused_step``, formed now; None for a dtype without a
        complex counterpart for the recurrence (float16 / bfloat16: the differentiable step)."""
        if self.encoder.weight.dtype not in (torch.float32, torch.float64):
            return None
        layers = []
        for block in self._blocks():
            r = block.recurrence
            log_mag, phase = r.decay()
            glu = torch.cat([block.glu_value.weight, block.glu_gate.weight], dim=0).T  # (H, 2H)
            glu_bias = torch.cat([block.glu_value.bias, block.glu_gate.bias])
            norm = (block.norm.weight.clone(), block.norm.bias.clone(), block.norm.eps)
            lam = torch.polar(torch.exp(log_mag), phase)  # (N,) complex: (a_re, a_im) of the step
            layers.append(_FusedLayer(*norm, r._in_proj().T, lam, r._out_proj().T, r.D.clone(), glu, glu_bias))
        # Copies, not views or the parameters themselves: a view would hold a reference to the
        # parameter (torch.utils.swap_tensors, which Module.to may use, refuses such a tensor).
        encoder, head = self.encoder, self.head
        return _FusedStep(
            encoder.weight.T.clone(), encoder.bias.clone(), tuple(layers), head.weight.T.clone(), head.bias.clone()
        )

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        dtype = self.encoder.weight.dtype  # the state follows the model's precision
        return tuple(torch.zeros(batch_size, self.state_dim, 2, device=device, dtype=dtype) for _ in self.blocks)

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # Without autograd and outside torch.func transforms nothing differentiates or batches
        # the weights, so the fused ones can be formed once and reused (planning, rollouts).
        if not torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active():
            fused = self._step_weights()
            if fused is not None:
                return _fused_step(fused, x, state)
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
        """``_run`` over consecutive segments of about ``_SEGMENT_TOKENS`` tokens, the state carried.

        Exact (a sequence continues from any state), and each op's tensors stay cache-sized: on
        one long sequence every per-token op runs out of cache and the time grows faster than T.
        """
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
        batch, steps, _ = x.shape
        if reset is None and steps <= self.chunk_size:
            return self._run_one_chunk(x, state)
        size = min(self.chunk_size, steps)
        chunks = -(-steps // size)
        pad = chunks * size - steps
        if pad:
            # Steps appended after the last one cannot change it; their outputs are dropped.
            x = F.pad(x, (0, 0, 0, pad))
            reset = F.pad(reset, (0, pad)) if reset is not None else None
        resets = to_chunks(reset, size) if reset is not None else None  # (C, B, chunks)
        # Tokens in chunk-major order (step c * C + s at [s, b, c]), flat: (C * B * chunks, in).
        tokens = x.reshape(batch, chunks, size, -1).permute(2, 0, 1, 3).reshape(size * batch * chunks, -1)
        last = ((steps - 1) % size, (steps - 1) // size)
        h = self.encoder(tokens)
        new_state = []
        for block, s in zip(self._blocks(), state, strict=True):
            u, s = block.recurrence.sequence(block.norm(h), s, resets, (size, batch, chunks), last)
            h = block.mix_tokens(h, u) if _unfused(h.shape[0]) else block.mix(h, u)
            new_state.append(s)
        y = self.head(h).reshape(size, batch, chunks, -1).permute(1, 2, 0, 3).reshape(batch, chunks * size, -1)
        return (y[:, :steps] if pad else y), tuple(new_state)

    def _run_one_chunk(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """``_run`` for T <= chunk_size without reset: ``two_level_scan`` per layer, with the
        tokens in its block-major order (one reordering of the input and one of the output)."""
        batch, steps, _ = x.shape
        size, blocks = block_shape(steps)
        pad = size * blocks - steps
        if pad:
            # Steps appended after the last one cannot change it; their outputs are dropped.
            x = F.pad(x, (0, 0, 0, pad))
        # (B, T, in) -> tokens ordered (position in block, block, row): (C * blocks * B, in).
        tokens = x.reshape(batch, blocks, size, -1).permute(2, 1, 0, 3).reshape(size * blocks * batch, -1)
        last = ((steps - 1) % size, (steps - 1) // size)
        encoder, head = self.encoder, self.head
        h = _linear(tokens, encoder.weight, encoder.bias)  # (tokens, H)
        new_state = []
        for block, s in zip(self._blocks(), state, strict=True):
            u, s = block.recurrence.sequence_one_chunk(block.norm(h), s, (size, blocks, batch), last)
            h = block.mix_tokens(h, u) if _unfused(h.shape[0]) else block.mix(h, u)
            new_state.append(s)
        y = _linear(h, head.weight, head.bias).reshape(size, blocks, batch, -1).permute(2, 1, 0, 3)
        y = y.reshape(batch, blocks * size, -1)
        return (y[:, :steps] if pad else y), tuple(new_state)


class _FusedLayer(NamedTuple):
    """One layer's step weights, formed by ``SSM._fuse_step_weights``."""

    norm_weight: Tensor
    norm_bias: Tensor
    norm_eps: float
    drive: Tensor  # (H, 2N): z @ it = gamma B z, columns (state, re/im)
    lam: Tensor  # (N,) complex: lambda
    read: Tensor  # (2N, H): h @ it = Re(C h)
    skip: Tensor  # (H,): D
    glu: Tensor  # (H, 2H): v @ it = [W_a v, W_b v]
    glu_bias: Tensor  # (2H,)


class _FusedStep(NamedTuple):
    """The whole model's step weights; linear weights stored transposed, as addmm takes them."""

    encoder: Tensor
    encoder_bias: Tensor
    layers: tuple[_FusedLayer, ...]
    head: Tensor
    head_bias: Tensor


def _fused_step(weights: _FusedStep, x: Tensor, state: State) -> tuple[Tensor, State]:
    """One step of the model on fused weights, the same function as ``SSM._differentiable_step``
    (equal to float rounding): per layer LayerNorm, the drive's product, lambda h + drive as one
    complex addcmul on the state viewed as complex, the readout's product with D z, GELU, both
    GLU halves in one product, sigmoid and the residual addcmul.

    Shapes: x (B, in), state one (B, N, 2) per layer -> y (B, out), the new state.
    """
    h = torch.addmm(weights.encoder_bias, x, weights.encoder)  # (B, H)
    batch, width = h.shape
    new_state = []
    for layer, s in zip(weights.layers, state, strict=True):
        z = F.layer_norm(h, (width,), layer.norm_weight, layer.norm_bias, layer.norm_eps)
        drive = torch.view_as_complex((z @ layer.drive).reshape(batch, -1, 2))  # (B, N) complex
        if not s.is_contiguous() or s.storage_offset() % 2:  # as view_as_complex needs it
            s = s.clone(memory_format=torch.contiguous_format)
        s = torch.view_as_real(torch.addcmul(drive, torch.view_as_complex(s), layer.lam))  # (B, N, 2)
        u = torch.addcmul(s.reshape(batch, -1) @ layer.read, z, layer.skip)  # Re(C h) + D z, (B, H)
        g = torch.addmm(layer.glu_bias, gelu_native(u), layer.glu)  # (B, 2H)
        h = torch.addcmul(h, g[:, :width], torch.sigmoid(g[:, width:]))
        new_state.append(s)
    return torch.addmm(weights.head_bias, h, weights.head), tuple(new_state)
