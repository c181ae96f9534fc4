"""Tent lowers predictive entropy under a shift; the monitor's meta-features equal their
definitions; registered strategies work."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from adaptation import STRATEGIES, AdaptationConfig, Adapter, Strategy, register_strategy
from adaptation.params import norm_parameter_names
from adaptation.strategies import categorical_entropy
from models import MODELS, ModelConfig, SequenceModel, State
from tests.adaptation._common import IN, model, weights

C = 3  # classes


class NormClassifier(SequenceModel):
    """A stateless classifier with a LayerNorm, for Tent's own setting."""

    name = "norm-classifier"
    stateless = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.inp = nn.Linear(config.input_dim, config.hidden_dim)
        self.norm = nn.LayerNorm(config.hidden_dim)
        self.head = nn.Linear(config.hidden_dim, config.output_dim)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        return ()

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.head(torch.tanh(self.norm(self.inp(x)))), ()


def _blobs(n: int, g: torch.Generator, shifted: bool = False) -> tuple[Tensor, Tensor]:
    """Three Gaussian classes in 5-D; the shift lowers contrast, adds noise and an offset."""
    means = torch.zeros(C, IN)
    means[torch.arange(C), torch.arange(C)] = 2.5
    labels = torch.randint(0, C, (n,), generator=g)
    x = means[labels] + torch.randn(n, IN, generator=g)
    if shifted:
        x = 0.4 * x + torch.randn(n, IN, generator=g) + 0.5
    return x, labels


def _entropy_and_accuracy(m: nn.Module, x: Tensor, labels: Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits, _ = m(x, ())
    return float(categorical_entropy(logits).mean()), float((logits.argmax(-1) == labels).float().mean())


def test_tent_lowers_entropy_on_shifted_inputs_and_adapts_only_norms() -> None:
    torch.manual_seed(0)
    m = NormClassifier(ModelConfig(IN, C, 16))
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(200):
        x, labels = _blobs(64, g)
        loss = nn.functional.cross_entropy(m(x, ())[0], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clean_entropy, _ = _entropy_and_accuracy(m, *_blobs(500, g))
    held_out = _blobs(500, g, shifted=True)
    entropy_before, accuracy_before = _entropy_and_accuracy(m, *held_out)
    assert entropy_before > 1.5 * clean_entropy  # the shift makes the model unsure

    before = weights(m)
    adapter = Adapter(m, AdaptationConfig(lr=1e-2), strategy="tent")
    assert [n for n, _ in adapter.params] == ["norm.weight", "norm.bias"]
    for _ in range(20):  # a stream of unlabelled shifted batches
        info = adapter.adapt({"x": _blobs(64, g, shifted=True)[0]})
        assert info["updated"]
    entropy_after, accuracy_after = _entropy_and_accuracy(m, *held_out)
    assert entropy_after < 0.95 * entropy_before, (entropy_before, entropy_after)
    assert accuracy_after >= accuracy_before - 0.02
    for k in ("inp.weight", "inp.bias", "head.weight", "head.bias"):
        assert torch.equal(m.state_dict()[k], before[k]), k


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tent_on_every_model(name: str) -> None:
    m = model(name, out=C)
    if not norm_parameter_names(m):
        with pytest.raises(ValueError, match=r"^params: .*no normalisation layers.*got 'norm'"):
            Adapter(m, strategy="tent")
        return
    before = weights(m)
    adapter = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=10), strategy="tent")
    train, held_out = torch.randn(8, 12, IN), torch.randn(8, 12, IN)

    def held_out_entropy() -> float:
        with torch.no_grad():
            return float(categorical_entropy(m(held_out, m.init_state(8))[0]).mean())

    start = held_out_entropy()
    info = adapter.adapt({"x": train})
    assert info["loss"] < info["loss_before"]
    assert held_out_entropy() < start
    adapted = {n for n, _ in adapter.params}
    for k, v in m.named_parameters():
        assert torch.equal(v, before[k]) != (k in adapted), k


# ---- the monitor -------------------------------------------------------------------------------


def test_categorical_meta_features_equal_their_definitions() -> None:
    adapter = Adapter(model("mlp"))
    logits = torch.randn(4, 6, 5)
    feats = adapter.observe(logits)
    dist = torch.distributions.Categorical(logits=logits)
    assert feats["entropy"] == pytest.approx(float(dist.entropy().mean()), rel=1e-6)
    assert feats["confidence"] == pytest.approx(float(dist.probs.max(-1).values.mean()), rel=1e-6)
    uniform = adapter.observe(torch.zeros(3, 5))
    assert uniform["entropy"] == pytest.approx(math.log(5)) and uniform["confidence"] == pytest.approx(0.2)
    sure = adapter.observe(torch.tensor([[50.0, 0.0, 0.0]]))
    assert sure["entropy"] < 1e-6 and sure["confidence"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"^outputs: expected logits .* got shape \(4, 1\)"):
        adapter.observe(torch.randn(4, 1))


def test_gaussian_meta_features_equal_their_definitions() -> None:
    adapter = Adapter(model("mlp"))
    mean, log_std = torch.randn(4, 3), torch.randn(4, 3)
    feats = adapter.observe(mean, log_std=log_std)
    normal = torch.distributions.Normal(mean, log_std.exp())
    assert feats["variance"] == pytest.approx(float(normal.variance.mean()), rel=1e-6)
    assert feats["entropy"] == pytest.approx(float(normal.entropy().sum(-1).mean()), rel=1e-6)
    assert "confidence" not in feats
    with pytest.raises(ValueError, match=r"^log_std: expected a shape broadcastable"):
        adapter.observe(mean, log_std=torch.zeros(4, 3, 2))


def test_feature_shift_detects_a_moved_input_distribution() -> None:
    adapter = Adapter(model("mlp"), AdaptationConfig(monitor_decay=0.8))
    g = torch.Generator().manual_seed(0)
    assert math.isnan(adapter.observe(features=torch.randn(64, IN, generator=g))["feature_shift"])
    stationary = [adapter.observe(features=torch.randn(64, IN, generator=g))["feature_shift"] for _ in range(20)]
    assert max(stationary) < 0.5
    shifted = adapter.observe(features=torch.randn(64, IN, generator=g) + 2.0)["feature_shift"]
    assert 1.5 < shifted < 2.5  # about two standard deviations in every feature
    # the moving statistics absorb a persistent shift
    later = [adapter.observe(features=torch.randn(64, IN, generator=g) + 2.0)["feature_shift"] for _ in range(30)]
    assert later[-1] < 0.5
    with pytest.raises(ValueError, match=r"^features: expected 5 features .* got 4"):
        adapter.observe(features=torch.randn(8, 4))


def test_feature_shift_statistics_follow_the_ema_rule() -> None:
    adapter = Adapter(model("mlp"), AdaptationConfig(monitor_decay=0.5))
    a, b = torch.randn(10, 3, 4), torch.randn(7, 4) + 1
    adapter.observe(features=a)
    shift = adapter.observe(features=b)["feature_shift"]
    a2 = a.reshape(-1, 4).double()
    mu, var = a2.mean(0), a2.var(0, unbiased=False)
    expected = float(((b.double().mean(0) - mu) ** 2 / (var + 1e-6)).mean().sqrt())
    assert shift == pytest.approx(expected, rel=1e-9)
    pooled = torch.cat([a2, b.double()])  # equal weights 0.5 : 0.5 = a mixture of the two batches
    weights_ = torch.cat([torch.full((30,), 0.5 / 30), torch.full((7,), 0.5 / 7)]).double()
    mix_mean = (weights_[:, None] * pooled).sum(0)
    mix_var = (weights_[:, None] * (pooled - mix_mean) ** 2).sum(0)
    assert adapter.monitor.mean is not None and adapter.monitor.var is not None
    torch.testing.assert_close(adapter.monitor.mean, mix_mean)
    torch.testing.assert_close(adapter.monitor.var, mix_var)


# ---- the registry ------------------------------------------------------------------------------


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Registrations made by a test are removed afterwards."""
    known = dict(STRATEGIES)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(known)


@pytest.mark.usefixtures("scratch_registry")
def test_register_strategy_adds_a_working_strategy() -> None:
    @register_strategy("mae")
    def mae(outputs: Tensor, targets: Tensor | None) -> Tensor:
        assert targets is not None
        return (outputs - targets).abs().mean()

    @register_strategy("head-only-mse")
    class HeadOnly(Strategy):
        default_params = ("net.4",)

        def objective(self, outputs: Tensor, targets: Tensor | None) -> Tensor:
            assert targets is not None
            return (outputs - targets).pow(2).mean()

    assert mae(torch.ones(2), torch.zeros(2)) == 1.0  # the decorator returns what it was given
    assert STRATEGIES["head-only-mse"] is HeadOnly and HeadOnly.name == "head-only-mse"
    x, y = torch.randn(4, 6, IN), torch.randn(4, 6, 3)

    m = model("mlp")
    info = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=5), strategy="mae").adapt((x, y))
    with torch.no_grad():
        now = float((m(x, ())[0] - y).abs().mean())
    assert info["loss"] == pytest.approx(now, rel=1e-5) and info["loss"] < info["loss_before"]

    m = model("mlp")
    adapter = Adapter(m, AdaptationConfig(lr=1e-2, num_steps=5), strategy="head-only-mse")
    assert [n for n, _ in adapter.params] == ["net.4.weight", "net.4.bias"]
    info = adapter.adapt((x, y))
    assert info["loss"] < info["loss_before"]

    with pytest.raises(ValueError, match=r"name 'mae' is already registered"):
        register_strategy("mae")(mae)
    with pytest.raises(ValueError, match=r"expected a Strategy subclass or an objective function, got 3"):
        register_strategy("three")(3)
