"""Layers shared by zoo models: LayerNorm, linear layers on rows and GELU, each in the form that
batches and differentiates best where it runs (plainly, or under MAML's torch.func transforms)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models._functorch import is_grad_tracked, transforms_active


class LayerNorm(nn.Module):
    """Layer normalisation (Ba et al. 2016) over the last dim; affine split off under torch.func.

    torch's fused ``layer_norm`` with a weight and bias has a wrong batching rule for its
    backward (pytorch/functorch issue 534): a second-order meta-gradient taken by autograd
    through ``vmap`` of ``torch.func.grad`` (MetaMAML's vectorised path) comes out wrong, by 1e-2
    in float64 here. The error is in the weight and bias part: the fused normalisation without
    an affine differentiates correctly under vmap, to second order, for every mix of batched and
    unbatched input, weight and bias (tests/models/test_layers.py). So under a torch.func
    transform this module normalises with the fused kernel and applies the affine as a product
    and a sum (``layer_norm_split``: 3 ops, and their derivatives, where the elementary
    composite ``layer_norm_composite`` takes 10); elsewhere it uses the fused kernel whole.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``LayerNorm``'s function, for callers that skip the module call (a one-step path, where
    the call costs as much as the kernel): the fused kernel, or ``layer_norm_split`` under a
    torch.func transform."""
    if not transforms_active():
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    return layer_norm_split(x, weight, bias, eps)


def layer_norm_split(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """The fused normalisation without its affine, then ``bias + normalised * weight``: the
    same function as ``F.layer_norm`` (to rounding), with a backward that batches correctly.
    A product and a sum rather than one ``addcmul``: addcmul's backward scales each factor's
    gradient by its ``value`` argument, an extra pass over every task's tensor under vmap."""
    return F.layer_norm(x, (x.shape[-1],), None, None, eps) * weight + bias


def layer_norm_composite(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim, from elementary ops."""
    dim = x.shape[-1]
    centred = x - x.sum(dim=-1, keepdim=True) / dim
    var = (centred * centred).sum(dim=-1, keepdim=True) / dim
    return torch.addcmul(bias, centred * torch.rsqrt(var + eps), weight)


def linear_rows(
    h: Tensor, weight: Tensor, bias: Tensor, transposed_grad: Literal["input", "output"] = "input"
) -> Tensor:
    """``bias + h @ weight.T`` on (N, in) rows (one ``addmm`` outside transforms), with ``weight.T`` laid out for
    MetaMAML's second order under vmap.

    Where a ``torch.func.grad`` differentiates ``weight`` (the support pass of MetaMAML's
    vectorised path), autograd forms the weight's gradient from a transposed operand, and under
    vmap the outer (second-order) backward of that product, a bmm, returns the gradient at that
    operand transposed: a strided (N, in) or (N, out) tensor, on which every elementwise op of
    the outer backward downstream (tanh_backward, gelu_backward, mul, add) runs several times
    slower and which is copied back to row-major before the next matmul. Which side gets it
    depends on the layout of ``weight.T``: the plain view (column-major) makes autograd form the
    gradient as ``(grad_out.T @ h).T``, so the second-order gradient at the output rows comes
    back transposed; a row-major copy makes it ``h.T @ grad_out``, so the one at the input rows
    does. ``transposed_grad`` picks the side: the input (the default: a copy, as the mlp takes)
    or the output (the view), whichever feeds fewer or cheaper elementwise ops (an input that
    needs no gradient, as the data, or a narrow residual rather than a wide GELU output).
    Values are the same to float rounding. Outside a transform, or for a weight that no
    ``grad`` tracks (MAML's batched fast weights), the view is used: the copy would only cost
    an op.

    Shapes:
        h (N, in), weight (out, in), bias (out,) -> (N, out).
    """
    weight_t = weight.t()
    if not transforms_active():
        return torch.addmm(bias, h, weight_t)
    if transposed_grad == "input" and is_grad_tracked(weight):
        weight_t = weight_t.contiguous()
    # A product and a sum, not addmm: vmap runs addmm with batched weights as a baddbmm whose
    # rule adds a pass scaling by beta = 1.
    return h @ weight_t + bias


_ONEDNN_GELU_MIN = 16384
"""Elements from which oneDNN's GELU beats the native kernel on a CPU thread (its set-up cost
dominates below)."""


def gelu_native(x: Tensor) -> Tensor:
    """Exact GELU, x Phi(x) (Hendrycks & Gimpel 2016), on whichever CPU kernel is faster.

    For a contiguous float32 CPU tensor ``F.gelu`` calls oneDNN, whose set-up costs about 20 us
    a call: twice the native kernel on a one-step (B, H) tensor, though twice as fast on a long
    sequence. The native kernel takes any non-contiguous input, so a small (B, H) tensor goes
    through as its transpose (the output keeps the input's strides, so the result is contiguous
    again), or for B = 1 as a stride-0 pair of rows of which the first is kept. Other inputs
    use ``F.gelu``. Both kernels compute x / 2 (1 + erf(x / sqrt 2)) and agree to float rounding.

    Shapes:
        x (..., H) -> (..., H).
    """
    if x.dim() != 2 or x.shape[1] < 2 or x.numel() >= _ONEDNN_GELU_MIN or not x.is_contiguous():
        return F.gelu(x)
    if x.shape[0] > 1:
        return F.gelu(x.t()).t()
    return F.gelu(x.expand(2, -1))[:1]
