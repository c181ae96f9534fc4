"""AdaptationConfig validation and the Adapter's input errors: every message names its field."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adaptation import STRATEGIES, AdaptationConfig, Adapter
from tests.adaptation._common import IN, OUT, model


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", float("inf")),
        ("lr", "0.1"),
        ("lr", None),
        ("num_steps", 0),
        ("num_steps", 2.5),
        ("num_steps", True),
        ("optimizer", "rmsprop"),
        ("grad_clip_norm", 0.0),
        ("grad_clip_norm", float("nan")),
        ("max_param_step", -0.1),
        ("trust_region", 0),
        ("ema_decay", 1.0),
        ("ema_decay", -0.5),
        ("tolerance", -1e-6),
        ("tolerance", float("inf")),
        ("params", ""),
        ("params", "(unclosed"),
        ("params", ()),
        ("params", ("head", 3)),
        ("params", 7),
        ("monitor_decay", 1.5),
        ("monitor_decay", None),
        ("divergence_factor", 1.0),
        ("divergence_factor", float("inf")),
        ("divergence_factor", float("nan")),
        ("divergence_factor", True),
    ],
)
def test_every_config_error_names_its_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^AdaptationConfig\.{field}: expected .*, got ") as err:
        AdaptationConfig(**{field: value})
    assert "\n" not in str(err.value)


def test_config_is_frozen_and_normalises_substring_lists() -> None:
    cfg = AdaptationConfig(params=["head", "norm"])
    assert cfg.params == ("head", "norm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert AdaptationConfig(ema_decay=None).anchor_decay == 0.0
    assert AdaptationConfig(ema_decay=0.9).anchor_decay == 0.9


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"strategy: unknown name 'nope'.*'none'.*'online'.*'tent'"):
        Adapter(model("mlp"), strategy="nope")
    assert {"none", "online", "tent"} <= set(STRATEGIES)


def test_adapter_input_errors_name_the_field() -> None:
    m = model("mlp")
    adapter = Adapter(m)
    x = torch.randn(2, 4, IN)
    with pytest.raises(ValueError, match=r"^batch: expected keys .* got \['target', 'x'\]"):
        adapter.adapt({"x": x, "target": x})
    with pytest.raises(ValueError, match=r"^batch: strategy 'online' expected targets y"):
        adapter.adapt({"x": x})
    with pytest.raises(ValueError, match=r"^y: expected shape \(2, 4, 3\).*got \(2, 4, 2\)"):
        adapter.adapt((x, torch.randn(2, 4, 2)))
    with pytest.raises(ValueError, match=r"^batch\.x: expected a tensor .* got \(2, 4, 1, 5\)"):
        adapter.adapt((x.unsqueeze(2), torch.randn(2, 4, OUT)))
    with pytest.raises(ValueError, match=r"^batch: expected a mapping .* got str"):
        adapter.adapt("x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^loss_fn: expected a scalar tensor"):
        adapter.adapt((x, torch.randn(2, 4, OUT)), loss_fn=lambda o, y: (o - y).pow(2))
    with pytest.raises(ValueError, match=r"^config: expected an AdaptationConfig, got dict"):
        Adapter(m, {"lr": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^model: expected an nn.Module with init_state"):
        Adapter(torch.nn.Linear(2, 2))


def test_a_filter_that_matches_nothing_names_params() -> None:
    with pytest.raises(ValueError, match=r"^params: expected a filter matching .* got 'nothing_\$'"):
        Adapter(model("mlp"), AdaptationConfig(params="nothing_$"))
    with pytest.raises(ValueError, match=r"no normalisation layers.*got 'norm'"):
        Adapter(model("mlp"), AdaptationConfig(params="norm"))


def test_non_finite_starting_weights_are_refused() -> None:
    m = model("mlp")
    with torch.no_grad():
        next(m.parameters())[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^model: expected finite parameters.*net\.0\.weight"):
        Adapter(m)
