"""``lstm``: torch's fused LSTM on the raw inputs, then a linear head.

    h_t, c_t = LSTM(x_t, (h_{t-1}, c_{t-1}))   (num_layers stacked, nn.LSTM)
    y_t = W_out h_t^{(L)} + b_out

Sequence mode runs the fused ``nn.LSTM`` kernel. Under torch.func transforms (MAML's vmapped
tasks; vmap has no batching rule for the kernel), the same parameters run through the hand-written
cells of models/rnn_cells.py instead; single steps always use the cells.

References:
    Hochreiter & Schmidhuber (1997), "Long Short-Term Memory".
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.base import SequenceModel, State
from models.rnn_cells import RecurrentConfig, layer_weights, lstm_cells, needs_cells


@dataclasses.dataclass(frozen=True)
class LSTMConfig(RecurrentConfig):
    """Attributes: those of ``RecurrentConfig`` (input_dim, output_dim, hidden_dim, num_layers)."""


class LSTM(SequenceModel):
    """Stacked LSTM with a linear head; state ``(h, c)``, each (B, num_layers, hidden_dim)."""

    name = "lstm"
    config_class = LSTMConfig

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__(config)
        self.num_layers = config.num_layers
        self.hidden_dim = config.hidden_dim
        self.rnn = nn.LSTM(config.input_dim, config.hidden_dim, config.num_layers, batch_first=True)
        self.head = nn.Linear(config.hidden_dim, config.output_dim)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        shape = (batch_size, self.num_layers, self.hidden_dim)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state  # (B, L, H) each
        if needs_cells():
            out, h, c = lstm_cells(x, h, c, layer_weights(self.rnn))
        else:
            # nn.LSTM keeps its state layer first: (L, B, H).
            hx = (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())
            out, (h_n, c_n) = self.rnn(x, hx)  # out (B, T, H)
            h, c = h_n.transpose(0, 1), c_n.transpose(0, 1)
        return self.head(out), (h, c)

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # One step through the cells: about twice as fast as nn.LSTM on a length-1 sequence
        # (its per-call overhead dominates), and needs no switch under vmap.
        h, c = state
        out, h, c = lstm_cells(x, h, c, layer_weights(self.rnn))  # (B, H)
        head = self.head
        return F.linear(out, head.weight, head.bias), (h, c)
