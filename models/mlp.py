"""``mlp``: the stateless baseline. Each step's output depends on that step's input only.

Kept, as POPGym keeps one, to show whether a task needs memory at all.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.base import ModelConfig, SequenceModel, State


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
        return self.net(x), ()  # (B, T, in) -> (B, T, out)

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # The layers' arithmetic without nn.Module's per-call machinery, which on one step costs
        # about as much; weights are read by attribute, so functional_call still swaps them.
        for layer in self.net:
            x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else torch.tanh(x)
        return x, ()

    def _forward_sequence_with_reset(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        return self.net(x), ()  # nothing to reset
