"""``neural-state``: the residual MLP recurrence of the original SSM-MetaRL-TestCompute.

    h_t = MLP_h(h_{t-1}) + W x_t
    y_t = MLP_y(h_t) + V x_t

The original project called this its "state space model"; it is kept so its claims can be
reproduced beside a real SSM (models/ssm.py). It has no structure to exploit, so sequence mode is
a Python loop over time.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.base import ModelConfig, SequenceModel, State


@dataclasses.dataclass(frozen=True)
class NeuralStateConfig(ModelConfig):
    """Attributes:
    state_dim: size of h; 0 means ``hidden_dim``.
    """

    state_dim: int = 0


def _two_layer(width_in: int, width: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, width), nn.Tanh(), nn.Linear(width, width_out))


def _apply_two_layer(net: nn.Sequential, x: Tensor) -> Tensor:
    """``net(x)`` for a ``_two_layer`` net, calling F.linear on its weights directly.

    On one step the three nn.Module calls cost about as much as the arithmetic; the weights are
    read by attribute, so ``torch.func.functional_call`` still swaps them.
    """
    first, second = cast(nn.Linear, net[0]), cast(nn.Linear, net[2])
    return F.linear(torch.tanh(F.linear(x, first.weight, first.bias)), second.weight, second.bias)


class NeuralState(SequenceModel):
    """Residual-MLP recurrence; state ``h`` of shape (B, state_dim)."""

    name = "neural-state"
    config_class = NeuralStateConfig

    def __init__(self, config: NeuralStateConfig) -> None:
        super().__init__(config)
        self.state_dim = config.state_dim or config.hidden_dim
        self.transition = _two_layer(self.state_dim, config.hidden_dim, self.state_dim)  # MLP_h
        self.input_map = nn.Linear(config.input_dim, self.state_dim, bias=False)  # W
        self.readout = _two_layer(self.state_dim, config.hidden_dim, config.output_dim)  # MLP_y
        self.skip = nn.Linear(config.input_dim, config.output_dim, bias=False)  # V

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        return torch.zeros(batch_size, self.state_dim, device=device)

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h = _apply_two_layer(self.transition, state) + F.linear(x, self.input_map.weight)  # (B, S)
        return _apply_two_layer(self.readout, h) + F.linear(x, self.skip.weight), h

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        first, second = cast(nn.Linear, self.transition[0]), cast(nn.Linear, self.transition[2])
        # MLP_h's output bias joins the input drive of all steps at once and both weights are
        # transposed once, so a step is addmm, tanh, addmm: no per-step transpose or separate
        # add (fewer ops, which is what a Python loop over time pays for, twice under MAML).
        drive = F.linear(x, self.input_map.weight, second.bias)  # (B, T, S): W x_t + b_2
        w1_t, b1, w2_t = first.weight.t(), first.bias, second.weight.t()
        hs = []
        h = state
        # One unbind, not drive[:, t]: indexing would make each step's backward add a zero
        # gradient of the whole (B, T, S) drive, quadratic in T.
        for drive_t in drive.unbind(1):
            h = torch.addmm(drive_t, torch.addmm(b1, h, w1_t).tanh(), w2_t)
            hs.append(h)
        hidden = torch.stack(hs, dim=1)  # (B, T, S)
        return self.readout(hidden) + self.skip(x), h
