"""Shared helpers of the adaptation tests: small zoo models and their parameters."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models import make_model

IN, OUT, WIDTH = 5, 3, 16


def model(name: str, seed: int = 0, out: int = OUT) -> nn.Module:
    """A small zoo model with fixed initial weights."""
    torch.manual_seed(seed)
    return make_model(name, IN, out, hidden_dim=WIDTH)


def weights(m: nn.Module) -> dict[str, Tensor]:
    """A detached copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def assert_same(m: nn.Module, saved: dict[str, Tensor]) -> None:
    """Every parameter and buffer equals ``saved`` exactly."""
    now = m.state_dict()
    assert set(now) == set(saved)
    for k, v in saved.items():
        assert torch.equal(now[k], v), k


def all_finite(m: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in m.parameters())


def flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])
