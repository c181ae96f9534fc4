"""The fused no-grad step: one step of a model on weights formed once from its parameters.

Planning and rollouts step a model without autograd thousands of times with the same parameters,
where forming the step's weights (transposes, concatenations, lambda from its parameters) costs
as much as the step itself. A model with a fused step (the SSM and the transformer) keeps a
``WeightCache``; ``cached_step_weights`` returns the weights formed once per state of the
parameters, or None where they cannot be used (autograd on, a torch.func transform running, a
leaf that is not a plain tensor), and the model then takes its differentiable step: the reference
the fused step is tested against (equal to float rounding). ``run_fused`` is the loop both models
share (encoder, each layer's fused step, an optional final LayerNorm, head); each model's layer
weights and layer step follow.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models._functorch import transforms_active
from models.layers import LayerNorm, gelu_native

if TYPE_CHECKING:
    from models.ssm import SSM, SSMBlock
    from models.transformer import Block, Transformer

_Built = TypeVar("_Built")
_Layer = TypeVar("_Layer")


class WeightCache(Generic[_Built]):
    """Weights derived from a module's parameters, formed once and reused while they stay the same.

    Reused only while every leaf is the same tensor object, at the same ``_version`` (which every
    in-place write through the tensor bumps: optimiser steps, ``load_state_dict``, ``copy_`` under
    no_grad), over the same memory (``is_set_to`` the alias taken when they were formed: ``.to()``
    / ``.data =`` / ``swap_tensors`` put new memory under the same object). The one write no
    check sees is an in-place op on ``p.data``, which bypasses the version counter (autograd's own
    checks miss it too); use ``p.copy_`` under no_grad. A deep copy or an unpickled module starts
    with an empty cache.
    """

    __slots__ = ("aliases", "leaves", "value", "versions")

    def __init__(self) -> None:
        self.leaves: tuple[Tensor, ...] = ()
        self.versions: list[int] = []
        self.aliases: tuple[Tensor, ...] = ()
        self.value: _Built | None = None

    def get(self, leaves: list[Tensor | None], build: Callable[[], _Built]) -> _Built | None:
        """The weights ``build()`` forms from ``leaves``, cached; None where they cannot be cached
        (a leaf that is None, or not a plain tensor, as a tracing mode's fake tensors).

        Call only with autograd off and outside torch.func transforms: the weights are detached
        from nothing and batched over nothing.
        """
        same = cast(list[Tensor], leaves)  # once the identity test passes: no None among them
        if (
            self.value is not None
            and len(leaves) == len(self.leaves)
            and all(map(operator.is_, leaves, self.leaves))
            and [p._version for p in same] == self.versions
            and all(map(Tensor.is_set_to, same, self.aliases))
        ):
            return self.value
        plain = [p for p in leaves if isinstance(p, Tensor) and type(p) in (nn.Parameter, Tensor)]
        if len(plain) != len(leaves):
            return None
        value = build()
        self.value = None  # never a half-updated entry, should anything below raise
        self.leaves, self.versions = tuple(plain), [p._version for p in plain]
        self.aliases = tuple(p.detach() for p in plain)
        self.value = value
        return value

    def __deepcopy__(self, memo: dict[int, object]) -> WeightCache[_Built]:
        return WeightCache()

    def __reduce__(self) -> tuple[type[WeightCache[Any]], tuple[()]]:
        return (WeightCache, ())


def step_leaves(module: nn.Module, leaves: list[Tensor | None] | None = None) -> list[Tensor | None]:
    """Every parameter of ``module`` and its submodules (None where one is unset), looked up afresh
    (``functional_call`` swaps parameters in and out; a submodule may have been replaced), in a
    fixed order, appended to ``leaves``. Read from the modules' dicts (``nn.Module.__getattr__``
    costs more), a module without submodules without a call: this runs on every cached step."""
    if leaves is None:
        leaves = []
    leaves += module._parameters.values()
    subs: Any = module._modules  # typed Module | None; not cast(): its dict[...] costs more than the walk
    for sub in subs.values():
        if sub._modules:
            step_leaves(sub, leaves)
        else:
            leaves += sub._parameters.values()
    return leaves


def cached_step_weights(model: nn.Module, cache: WeightCache[_Built], build: Callable[[], _Built]) -> _Built | None:
    """``model``'s fused step weights from ``cache`` (formed by ``build`` when the parameters have
    changed); None with autograd on or under a torch.func transform, where the step must see the
    parameters as they are, or where they cannot be cached."""
    if torch.is_grad_enabled() or transforms_active():
        return None
    return cache.get(step_leaves(model), build)


class Norm(NamedTuple):
    """A LayerNorm's weights, copied."""

    weight: Tensor
    bias: Tensor
    eps: float


def norm_weights(norm: LayerNorm) -> Norm:
    return Norm(norm.weight.clone(), norm.bias.clone(), norm.eps)


class FusedStep(NamedTuple, Generic[_Layer]):
    """A whole model's step weights; linear weights stored transposed, as addmm takes them."""

    encoder: Tensor  # (in, D)
    encoder_bias: Tensor
    layers: tuple[_Layer, ...]
    norm: Norm | None  # a final LayerNorm before the head, if the model has one
    head: Tensor  # (D, out)
    head_bias: Tensor


def fuse(
    encoder: nn.Linear, layers: Sequence[_Layer], norm: LayerNorm | None, head: nn.Linear, row_major: bool
) -> FusedStep[_Layer]:
    """The step weights from the encoder, the fused layers, the final norm and the head: copies,
    never views of the parameters (a view would hold on to a parameter that ``swap_tensors``, which
    ``Module.to`` may use, refuses to replace). ``row_major``: weight.T as a row-major copy, else
    with the transposed view's strides; both give the same products up to rounding, and each
    model keeps the one its results are fixed with."""

    def transposed(w: Tensor) -> Tensor:
        return w.t().contiguous() if row_major else w.T.clone()

    final = norm_weights(norm) if norm is not None else None
    encoder_t, head_t = transposed(encoder.weight), transposed(head.weight)
    return FusedStep(encoder_t, encoder.bias.clone(), tuple(layers), final, head_t, head.bias.clone())


def run_fused(
    weights: FusedStep[_Layer], x: Tensor, states: Sequence[Tensor], layer_step: Callable[[_Layer, Tensor, Tensor], Any]
) -> tuple[Tensor, list[Tensor]]:
    """One step of a model on its fused weights: x (B, in), one state per layer -> y (B, out) and the
    new states; ``layer_step(layer, h, state) -> (h, state)`` is the model's layer."""
    h = torch.addmm(weights.encoder_bias, x, weights.encoder)  # (B, D)
    new_states = []
    for layer, s in zip(weights.layers, states, strict=True):
        h, s = layer_step(layer, h, s)
        new_states.append(s)
    n = weights.norm
    if n is not None:
        h = F.layer_norm(h, (h.shape[1],), n.weight, n.bias, n.eps)
    return torch.addmm(weights.head_bias, h, weights.head), new_states


# ---- the SSM's layer -----------------------------------------------------------------------


class SSMLayer(NamedTuple):
    """One SSM block's step weights."""

    norm: Norm
    drive: Tensor  # (H, 2N): z @ it = gamma B z, columns (state, re/im)
    lam: Tensor  # (N,) complex: lambda
    read: Tensor  # (2N, H): h @ it = Re(C h)
    skip: Tensor  # (H,): D
    glu: Tensor  # (H, 2H): v @ it = [W_a v, W_b v]
    glu_bias: Tensor  # (2H,)


SSMWeights = FusedStep[SSMLayer]


def fuse_ssm(model: SSM) -> SSMWeights | None:
    """The SSM's step weights; None for a dtype without a complex counterpart for the recurrence
    (float16 / bfloat16: the model takes its differentiable step)."""
    if model.encoder.weight.dtype not in (torch.float32, torch.float64):
        return None
    return fuse(model.encoder, [_ssm_layer(block) for block in model._blocks()], None, model.head, row_major=False)


def ssm_step(weights: SSMWeights, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``SSM._differentiable_step`` on fused weights: x (B, in), one (B, N, 2) per layer -> y (B, out), the state."""
    y, new_state = run_fused(weights, x, state, _ssm_layer_step)
    return y, tuple(new_state)


def _ssm_layer(block: SSMBlock) -> SSMLayer:
    r = block.recurrence
    log_mag, phase = r.decay()
    glu = torch.cat([block.glu_value.weight, block.glu_gate.weight], dim=0).T  # (H, 2H)
    glu_bias = torch.cat([block.glu_value.bias, block.glu_gate.bias])
    lam = torch.polar(torch.exp(log_mag), phase)  # (N,) complex: (a_re, a_im) of the step
    return SSMLayer(norm_weights(block.norm), r._in_proj().T, lam, r._out_proj().T, r.D.clone(), glu, glu_bias)


def _ssm_layer_step(layer: SSMLayer, h: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """``SSMBlock``'s step on fused weights: LayerNorm, the drive's product, lambda s + drive as one
    complex addcmul on the state viewed as complex, the readout's product with D z, GELU, both GLU
    halves in one product, sigmoid and the residual addcmul. h (B, H), s (B, N, 2)."""
    batch, width = h.shape
    n = layer.norm
    z = F.layer_norm(h, (width,), n.weight, n.bias, n.eps)
    drive = torch.view_as_complex((z @ layer.drive).reshape(batch, -1, 2))  # (B, N) complex
    if not s.is_contiguous() or s.storage_offset() % 2:  # as view_as_complex needs it
        s = s.clone(memory_format=torch.contiguous_format)
    s = torch.view_as_real(torch.addcmul(drive, torch.view_as_complex(s), layer.lam))  # (B, N, 2)
    u = torch.addcmul(s.reshape(batch, -1) @ layer.read, z, layer.skip)  # Re(C h) + D z, (B, H)
    g = torch.addmm(layer.glu_bias, gelu_native(u), layer.glu)  # (B, 2H)
    return torch.addcmul(h, g[:, :width], torch.sigmoid(g[:, width:])), s


# ---- the transformer's block -----------------------------------------------------------------


class TransformerLayer(NamedTuple):
    """One transformer block's step weights."""

    norm_attn: Norm
    qkv: Tensor  # (D, H A + 2A): z @ it = [q spread over the heads (H, A), scaled; k; v]
    qkv_bias: Tensor  # (H A + 2A,)
    rel_bias: Tensor  # (H, C + 1): the position bias in slot order (slot s holds offset C - s)
    out: Tensor  # (H A, D): each head's rows read only its own channels
    out_bias: Tensor
    norm_mlp: Norm
    up: Tensor  # (D, M)
    up_bias: Tensor
    down: Tensor  # (M, D)
    down_bias: Tensor


TransformerWeights = FusedStep[TransformerLayer]


def fuse_transformer(model: Transformer) -> TransformerWeights:
    """The transformer's step weights."""
    layers = [_transformer_layer(block) for block in cast(list["Block"], model.blocks)]
    return fuse(model.encoder, layers, model.norm, model.head, row_major=True)


def transformer_step(
    weights: TransformerWeights, x: Tensor, caches: Sequence[Tensor], mask: Tensor | None
) -> tuple[Tensor, list[Tensor]]:
    """``Transformer._differentiable_step`` on fused weights: x (B, in), caches (B, C, 2A) per layer,
    mask (B, 1, C + 1) or None -> y (B, out), the next caches."""
    # partial, not a lambda: no Python frame of its own per layer
    return run_fused(weights, x, caches, functools.partial(_transformer_layer_step, mask=mask))


def _transformer_layer(block: Block) -> TransformerLayer:
    attn, (up, _, down) = block.attn, cast(tuple[nn.Linear, nn.GELU, nn.Linear], tuple(block.mlp))
    width = attn.attn_dim
    w_q, w_kv = attn.qkv.weight[:width], attn.qkv.weight[width:]  # (A, D), (2A, D)
    b_q, b_kv = attn.qkv.bias[:width], attn.qkv.bias[width:]
    spread = attn.head_mask / math.sqrt(attn.head_dim)  # (H, A): the query per head, scaled
    qkv = torch.cat([(w_q.t()[:, None, :] * spread).flatten(1), w_kv.t()], dim=1)
    qkv_bias = torch.cat([(b_q * spread).flatten(), b_kv])
    out = (attn.out.weight.t() * attn.head_mask_3d).flatten(0, 1)  # (H A, D)
    return TransformerLayer(
        norm_weights(block.norm_attn), qkv, qkv_bias, attn.rel_bias.flip(-1), out, attn.out.bias.clone(),
        norm_weights(block.norm_mlp), up.weight.t().contiguous(), up.bias.clone(), down.weight.t().contiguous(),
        down.bias.clone(),
    )  # fmt: skip


def _transformer_layer_step(
    layer: TransformerLayer, h: Tensor, kv: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``Block.step`` on fused weights: the query spread over its heads and the keys | values from one
    product, the cache written with one concatenation, three batched products for the attention
    (see ``Attention.step``), the MLP. h (B, D), kv (B, C, 2A) -> h, the next kv (B, C, 2A)."""
    batch = h.shape[0]
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
    return h, kv_all[:, 1:]  # drop the oldest slot
