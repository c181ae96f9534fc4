"""Hand-written LSTM and GRU cells on ``nn.LSTM`` / ``nn.GRU``'s own parameters, and the pieces
``lstm`` and ``gru`` share.

``torch.func.vmap`` has no batching rule for the fused ``aten::lstm`` / ``aten::gru`` kernels
(pytorch issues 105982, 134606): under vmap they raise "Batching rule not implemented". MAML runs
its tasks under vmap, so the two models switch to the cells here whenever a torch.func transform
is running (the cells serve every transform). The cells use exactly the fused modules' parameters (``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, gate rows in torch's order: i, f, g, o for
the LSTM and r, z, n for the GRU), so the two paths compute the same function; tests/models/
test_rnn.py holds them equal to 1e-5 in values, gradients and second-order gradients.

Each layer projects its whole input sequence with one matmul before the loop over time; a step
then costs one matmul (the recurrence) and a handful of elementwise ops, since on a CPU the
per-op dispatch cost, multiplied by the number of steps, is what a Python time loop pays. The
projected sequence is split into steps with one ``unbind``: indexing ``drive[:, t]`` instead
would make every step's backward allocate and add a zero gradient of the whole (B, T, G*H)
sequence, quadratic in T. Sequence mode, which runs under MAML's vmap and is differentiated
twice there, is written for the fewest ops after that double differentiation (the LSTM's g gate
through one shared sigmoid, ``h @ W + b`` over ``addmm``); it equals single-step mode to float
rounding.

References:
    Hochreiter & Schmidhuber (1997), "Long Short-Term Memory"; gate equations as in the
    ``torch.nn.LSTM`` documentation. Cho et al. (2014), "Learning Phrase Representations using
    RNN Encoder-Decoder"; gate equations (reset applied after the recurrent matmul) as in the
    ``torch.nn.GRU`` documentation.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models._functorch import transforms_active
from models.base import ModelConfig

LayerWeights = tuple[Tensor, Tensor, Tensor, Tensor]
"""One layer's (weight_ih (G*H, in), weight_hh (G*H, H), bias_ih (G*H,), bias_hh (G*H,))."""


@dataclasses.dataclass(frozen=True)
class RecurrentConfig(ModelConfig):
    """Attributes:
    num_layers: stacked recurrent layers (the ``num_layers`` of nn.LSTM / nn.GRU).
    """

    num_layers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive_ints("num_layers")


def layer_weights(rnn: nn.RNNBase) -> list[LayerWeights]:
    """The per-layer parameters of a fused ``nn.LSTM`` / ``nn.GRU``, read by attribute.

    Reading by attribute (not ``_flat_weights``) picks up the tensors that
    ``torch.func.functional_call`` swaps in.
    """
    return [tuple(getattr(rnn, name) for name in names) for names in _weight_names(rnn.num_layers)]


@functools.cache
def _weight_names(num_layers: int) -> tuple[tuple[str, str, str, str], ...]:
    """``layer_weights``' attribute names, formed once per depth."""
    return tuple(
        (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}") for k in range(num_layers)
    )


def needs_cells() -> bool:
    """True under a torch.func transform, where the fused kernel may have no batching rule."""
    return transforms_active()


def _lstm_step(drive: Tensor, h: Tensor, c: Tensor, w_hh_t: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step from its precomputed input part ``drive`` (B, 4H); one matmul."""
    gates = torch.addmm(drive, h, w_hh_t)  # (B, 4H)
    width = h.shape[-1]
    # One sigmoid over all four gates (g's quarter unused): fewer ops, same values.
    i, f, _, o = gates.sigmoid().chunk(4, dim=1)
    c = torch.addcmul(f * c, i, gates.narrow(1, 2 * width, width).tanh())
    return o * c.tanh(), c


def lstm_layer(x: Tensor, h: Tensor, c: Tensor, weights: LayerWeights) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a sequence or one step, with nn.LSTM's parameters and gate order.

        i, f, o = sigmoid(W_i* x_t + b_i* + W_h* h + b_h*)     (gate rows in order i, f, g, o)
        g = tanh(W_ig x_t + b_ig + W_hg h + b_hg)
        c' = f * c + i * g;  h' = o * tanh(c')

    Args:
        x: the layer's input sequence, or one step.
        h, c: hidden and cell state before the first step.
        weights: (weight_ih, weight_hh, bias_ih, bias_hh) of this layer.

    Returns:
        ``(outputs, h, c)``: every step's h, and the state after the last step.

    Shapes:
        x (B, T, in) or (B, in); h, c (B, H); weight_ih (4H, in); weight_hh (4H, H)
        -> outputs (B, T, H) or (B, H).
    """
    w_ih, w_hh, b_ih, b_hh = weights
    if x.dim() == 2:
        drive = F.linear(x, w_ih, b_ih + b_hh)  # (B, 4H)
        h, c = _lstm_step(drive, h, c, w_hh.t())
        return h, h, c
    # Sequence mode (MAML's vmapped path, where every op is differentiated twice): the g rows
    # are scaled by 2 once per call, so one sigmoid over all four gates gives g through
    # tanh(a) = 2 sigmoid(2a) - 1, and the gates split with one chunk whose four parts are all
    # used. Per step this drops a narrow and a tanh, whose second-order backward under vmap
    # costs more than the two scalar ops that replace them (about 20% fewer aten ops in all).
    scale = torch.ones(4, h.shape[-1], dtype=w_hh.dtype, device=w_hh.device)
    scale[2] = 2.0
    scale = scale.view(-1)  # (4H,): 1 on the i, f, o rows, 2 on the g rows
    drive = F.linear(x, w_ih * scale[:, None], (b_ih + b_hh) * scale)  # (B, T, 4H), one matmul
    w_hh_t = (w_hh * scale[:, None]).t()  # (H, 4H)
    outputs = []
    for drive_t in drive.unbind(1):  # (B, 4H) per step; one unbind, linear backward
        i, f, g2, o = (drive_t + h @ w_hh_t).sigmoid().chunk(4, dim=1)  # g2 = sigmoid(2 a_g)
        c = f * c + i * (2 * g2 - 1)
        h = o * c.tanh()
        outputs.append(h)
    return torch.stack(outputs, dim=1), h, c


def _gru_step(drive_rz: Tensor, drive_n: Tensor, h: Tensor, w_hh_t: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step from its precomputed input parts (B, 2H) and (B, H); one matmul."""
    width = h.shape[-1]
    rec = torch.addmm(b_hh, h, w_hh_t)  # (B, 3H)
    rec_rz, rec_n = rec.split([2 * width, width], dim=1)
    r, z = (drive_rz + rec_rz).sigmoid().chunk(2, dim=1)
    n = torch.addcmul(drive_n, r, rec_n).tanh()
    return torch.lerp(n, h, z)  # n + z * (h - n) = (1 - z) * n + z * h


def gru_layer(x: Tensor, h: Tensor, weights: LayerWeights) -> tuple[Tensor, Tensor]:
    """One GRU layer over a sequence or one step, with nn.GRU's parameters and gate order.

        r, z = sigmoid(W_i* x_t + b_i* + W_h* h + b_h*)     (gate rows in order r, z, n)
        n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h

    Args:
        x: the layer's input sequence, or one step.
        h: hidden state before the first step.
        weights: (weight_ih, weight_hh, bias_ih, bias_hh) of this layer.

    Returns:
        ``(outputs, h)``: every step's h, and the state after the last step.

    Shapes:
        x (B, T, in) or (B, in); h (B, H); weight_ih (3H, in); weight_hh (3H, H)
        -> outputs (B, T, H) or (B, H).
    """
    w_ih, w_hh, b_ih, b_hh = weights
    # b_hn sits inside r * (...), so the two biases cannot be merged as in the LSTM.
    drive = F.linear(x, w_ih, b_ih)  # (B, T, 3H): every step's input part, one matmul
    width = h.shape[-1]
    drive_rz, drive_n = drive.split([2 * width, width], dim=-1)
    w_hh_t = w_hh.t()  # (H, 3H)
    if x.dim() == 2:
        h = _gru_step(drive_rz, drive_n, h, w_hh_t, b_hh)
        return h, h
    outputs = []
    # one unbind per part, linear backward
    for drive_rz_t, drive_n_t in zip(drive_rz.unbind(1), drive_n.unbind(1), strict=True):
        # h @ W + b rather than _gru_step's addmm: under MAML's vmap the pair differentiates
        # twice in fewer ops (about 4% fewer in the whole update); the single step, mostly run
        # without autograd, keeps the one addmm.
        rec_rz, rec_n = (h @ w_hh_t + b_hh).split([2 * width, width], dim=1)
        r, z = (drive_rz_t + rec_rz).sigmoid().chunk(2, dim=1)
        h = torch.lerp(torch.addcmul(drive_n_t, r, rec_n).tanh(), h, z)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h


def lstm_cells(x: Tensor, h: Tensor, c: Tensor, weights: list[LayerWeights]) -> tuple[Tensor, Tensor, Tensor]:
    """A stacked LSTM from cells, equal to ``nn.LSTM(batch_first=True)`` without dropout.

    Shapes:
        x (B, T, in) or one step (B, in); h, c (B, L, H), batch first like the models' state
        -> outputs of the last layer (B, T, H) or (B, H), h and c after the last step (B, L, H).
    """
    hs, cs = [], []
    for k, layer in enumerate(weights):
        x, h_k, c_k = lstm_layer(x, h[:, k], c[:, k], layer)
        hs.append(h_k)
        cs.append(c_k)
    return x, _stack_layers(hs), _stack_layers(cs)


def gru_cells(x: Tensor, h: Tensor, weights: list[LayerWeights]) -> tuple[Tensor, Tensor]:
    """A stacked GRU from cells, equal to ``nn.GRU(batch_first=True)`` without dropout.

    Shapes:
        x (B, T, in) or one step (B, in); h (B, L, H) -> outputs of the last layer (B, T, H) or
        (B, H), h after the last step (B, L, H).
    """
    hs = []
    for k, layer in enumerate(weights):
        x, h_k = gru_layer(x, h[:, k], layer)
        hs.append(h_k)
    return x, _stack_layers(hs)


def _stack_layers(states: list[Tensor]) -> Tensor:
    """Per-layer states (B, H) -> (B, L, H); one layer is a view, not a copy."""
    return states[0].unsqueeze(1) if len(states) == 1 else torch.stack(states, dim=1)
