"""``gru``: torch's fused GRU on the raw inputs, then a linear head.

    h_t = GRU(x_t, h_{t-1})   (num_layers stacked, nn.GRU)
    y_t = W_out h_t^{(L)} + b_out

Sequence mode runs the fused ``nn.GRU`` kernel. Under torch.func transforms (MAML's vmapped
tasks; vmap has no batching rule for the kernel), the same parameters run through the hand-written
cells of models/rnn_cells.py instead; single steps always use the cells.

References:
    Cho et al. (2014), "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
    Machine Translation".
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.base import SequenceModel, State
from models.rnn_cells import RecurrentConfig, gru_cells, layer_weights, needs_cells


@dataclasses.dataclass(frozen=True)
class GRUConfig(RecurrentConfig):
    """Attributes: those of ``RecurrentConfig`` (input_dim, output_dim, hidden_dim, num_layers)."""


class GRU(SequenceModel):
    """Stacked GRU with a linear head; state ``h`` of shape (B, num_layers, hidden_dim)."""

    name = "gru"
    config_class = GRUConfig

    def __init__(self, config: GRUConfig) -> None:
        super().__init__(config)
        self.num_layers = config.num_layers
        self.hidden_dim = config.hidden_dim
        self.rnn = nn.GRU(config.input_dim, config.hidden_dim, config.num_layers, batch_first=True)
        self.head = nn.Linear(config.hidden_dim, config.output_dim)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        return torch.zeros(batch_size, self.num_layers, self.hidden_dim, device=device)

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h = state  # (B, L, H)
        if needs_cells():
            out, h = gru_cells(x, h, layer_weights(self.rnn))
        else:
            # nn.GRU keeps its state layer first: (L, B, H).
            out, h_n = self.rnn(x, h.transpose(0, 1).contiguous())  # out (B, T, H)
            h = h_n.transpose(0, 1)
        return self.head(out), h

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # One step through the cells: faster than nn.GRU on a length-1 sequence (its per-call
        # overhead dominates), and needs no switch under vmap.
        out, h = gru_cells(x, state, layer_weights(self.rnn))  # (B, H)
        head = self.head
        return F.linear(out, head.weight, head.bias), h
