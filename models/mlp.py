"""``mlp``: the stateless baseline. Each step's output depends on that step's input only.

Kept, as POPGym keeps one, to show whether a task needs memory at all.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.base import ModelConfig, SequenceModel, State
from models.layers import linear_rows


@dataclasses.dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Attributes:
    num_layers: hidden layers of width ``hidden_dim``.
    """

    num_layers: int = 2


class MLP(SequenceModel):
    """Per-step feed-forward network: Linear -> tanh, ``num_layers`` times, then a linear head."""

    name = "mlp"
    config_class = MLPConfig
    stateless = True

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        layers: list[nn.Module] = []
        width = config.input_dim
        for _ in range(config.num_layers):
            layers += [nn.Linear(width, config.hidden_dim), nn.Tanh()]
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.output_dim))
        self.net = nn.Sequential(*layers)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        return ()

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # (B, T, in) -> (B * T, in): one addmm per layer, on rows whatever vmap adds in front.
        h = self._rows(x.reshape(-1, x.shape[-1]))
        return h.reshape(*x.shape[:-1], h.shape[-1]), ()

    def _rows(self, h: Tensor) -> Tensor:
        """The network on (N, in) rows: ``bias + h @ weight.T`` (``layers.linear_rows``, which
        lays ``weight.T`` out for MAML's second order under vmap) and tanh per layer."""
        for layer in self.net:
            h = linear_rows(h, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else torch.tanh(h)
        return h

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # The layers' arithmetic without nn.Module's per-call machinery, which on one step costs
        # about as much; weights are read by attribute, so functional_call still swaps them.
        for layer in self.net:
            x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else torch.tanh(x)
        return x, ()

    def _forward_sequence_with_reset(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        return self._forward_sequence(x, state)  # nothing to reset
