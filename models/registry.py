"""The zoo as data: name -> model class, and the helpers that build, size and load models.

Adding a model is one file defining a ``SequenceModel`` subclass plus one line in ``MODELS``;
the conformance tests (tests/models/test_conformance.py) then cover it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import nn

from models.base import ModelConfig, SequenceModel, _meta_param_count
from models.gru import GRU
from models.lstm import LSTM
from models.mlp import MLP
from models.neural_state import NeuralState
from models.ssm import SSM
from models.transformer import Transformer

MODELS: dict[str, type[SequenceModel]] = {
    "gru": GRU,
    "lstm": LSTM,
    "mlp": MLP,
    "neural-state": NeuralState,
    "ssm": SSM,
    "transformer": Transformer,
}


def get_model_class(name: str) -> type[SequenceModel]:
    """The class registered under ``name``; ValueError listing the known names otherwise."""
    if name not in MODELS:
        raise ValueError(f"model: unknown name {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_config(name: str, input_dim: int, output_dim: int, **config: Any) -> ModelConfig:
    """The frozen config of model ``name``; an unknown key is a ValueError listing the valid ones."""
    cls = get_model_class(name)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config) - fields)
    if unknown:
        valid = sorted(fields - {"input_dim", "output_dim"})
        raise ValueError(f"model {name!r}: unknown config key(s) {unknown}; expected any of {valid}")
    return cls.config_class(input_dim=input_dim, output_dim=output_dim, **config)


def size_for_budget(name: str, input_dim: int, output_dim: int, param_budget: int, **config: Any) -> int:
    """The ``hidden_dim`` whose parameter count is closest to ``param_budget``.

    Parameter counts grow monotonically with hidden_dim, so a bisection over integers finds the
    crossing; counting on the meta device costs no memory. The answer is remembered per
    (model class, dims, budget, config): a bisection builds a dozen or more models (about 0.3 s
    for the ssm), and suites size the same model for every cell.
    """
    if not isinstance(param_budget, int) or param_budget < 1:
        raise ValueError(f"param_budget: expected a positive int, got {param_budget!r}")
    cls: Any = get_model_class(name)  # classes hash by identity (typeshed's Hashable misses it)
    items = tuple(sorted(config.items()))
    try:
        hash(items)
    except TypeError:  # an unhashable config value: size it without the memo
        return _bisect_width.__wrapped__(cls, name, input_dim, output_dim, param_budget, items)
    return _bisect_width(cls, name, input_dim, output_dim, param_budget, items)


@functools.lru_cache(maxsize=256)
def _bisect_width(
    cls: Any,
    name: str,
    input_dim: int,
    output_dim: int,
    param_budget: int,
    config: tuple[tuple[str, Any], ...],
) -> int:
    """``size_for_budget``'s bisection; ``cls`` (the model class) is in the memo's key so a
    re-registered name is sized afresh."""

    def params(width: int) -> int:
        cfg = build_config(name, input_dim, output_dim, **{**dict(config), "hidden_dim": width})
        return _meta_param_count(lambda: cls(cfg))

    lo, hi = 1, 2
    while params(hi) < param_budget:
        lo, hi = hi, hi * 2
        if hi > 1 << 16:
            raise ValueError(f"param_budget: {param_budget} is out of reach for model {name!r}")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if params(mid) < param_budget:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: abs(params(w) - param_budget))


def make_model(
    name: str,
    input_dim: int,
    output_dim: int,
    *,
    hidden_dim: int | None = None,
    param_budget: int | None = None,
    device: torch.device | str | None = None,
    **config: Any,
) -> SequenceModel:
    """Build zoo model ``name``, optionally sized to ``param_budget`` parameters (within 10%).

    Args:
        name: a key of ``MODELS``.
        input_dim, output_dim: features per step.
        hidden_dim: width; mutually exclusive with ``param_budget``.
        param_budget: total parameters to aim for; sets ``hidden_dim``.
        device: where to put the model ("cpu", "cuda", ...).
        **config: further fields of the model's config class.
    """
    if hidden_dim is not None and param_budget is not None:
        raise ValueError("make_model: give hidden_dim or param_budget, not both")
    if param_budget is not None:
        hidden_dim = size_for_budget(name, input_dim, output_dim, param_budget, **config)
    if hidden_dim is not None:
        config["hidden_dim"] = hidden_dim
    cfg = build_config(name, input_dim, output_dim, **config)
    model = get_model_class(name)(cfg)
    return model.to(device) if device is not None else model


def load_model(path: str, device: torch.device | str | None = None) -> SequenceModel:
    """Rebuild a model written by ``SequenceModel.save``: same class, config and weights."""
    blob = torch.load(path, map_location=device or "cpu", weights_only=True)
    config = dict(blob["config"])
    model = make_model(blob["name"], config.pop("input_dim"), config.pop("output_dim"), **config)
    model.load_state_dict(blob["state_dict"])
    return model.to(device) if device is not None else model
