"""Normaliser fitted on training tasks only; support / query split from different episodes."""

import dataclasses

import numpy as np
import pytest
import torch

from suites.data import collect, fit_normalizer, split_support_query
from suites.tasks import get_distribution


@pytest.fixture(scope="module")
def data() -> tuple:
    dist = get_distribution("pendulum-mass-length")
    train = collect(dist, dist.sample(4, np.random.default_rng(0)), episodes=6, horizon=30, seed=0)
    test = collect(dist, dist.test_tasks(2), episodes=6, horizon=30, seed=1)
    return train, test


def test_fitted_statistics_standardise_the_training_data(data: tuple) -> None:
    train, _ = data
    norm = fit_normalizer(train)
    out = norm.apply(train)
    assert out.normalizer is norm and train.normalizer is None
    x = out.inputs.reshape(-1, out.inputs.shape[-1]).double()
    y = out.targets.reshape(-1, out.targets.shape[-1]).double()
    torch.testing.assert_close(x.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, correction=0), torch.ones(4, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)


def test_held_out_data_uses_the_training_statistics(data: tuple) -> None:
    train, test = data
    norm = fit_normalizer(train)
    out = norm.apply(test)
    torch.testing.assert_close(out.inputs, (test.inputs - norm.input_mean) / norm.input_std)
    assert not torch.allclose(fit_normalizer(test).input_mean, norm.input_mean)
    torch.testing.assert_close(norm.unapply_targets(out.targets), test.targets, atol=1e-5, rtol=1e-5)


def test_constant_features_are_only_centred(data: tuple) -> None:
    train, _ = data
    inputs = train.inputs.clone()
    inputs[..., 3] = 0.5  # a constant action
    norm = fit_normalizer(dataclasses.replace(train, inputs=inputs))
    assert norm.input_std[3] == 1.0 and norm.input_mean[3] == 0.5


def test_normalising_twice_or_a_mismatch_is_an_error(data: tuple) -> None:
    train, _ = data
    norm = fit_normalizer(train)
    with pytest.raises(ValueError, match="got data already normalised"):
        norm.apply(norm.apply(train))
    with pytest.raises(ValueError, match="got normalised data"):
        fit_normalizer(norm.apply(train))
    other = collect(get_distribution("point-nav-2d"), get_distribution("point-nav-2d").test_tasks(1), 2, 5, 0)
    with pytest.raises(ValueError, match=r"Normalizer\.apply: targets expected 3 features, got 2"):
        norm.apply(other)
    with pytest.raises(ValueError, match=r"Normalizer\.apply: inputs expected 5 features, got 4"):
        dataclasses.replace(norm, input_mean=torch.zeros(5)).apply(train)


def test_support_and_query_come_from_different_episodes(data: tuple) -> None:
    train, _ = data
    support, query = split_support_query(train, support_episodes=2)
    assert support.inputs.shape == (4, 2, 30, 4) and query.inputs.shape == (4, 4, 30, 4)
    assert torch.equal(support.inputs, train.inputs[:, :2]) and torch.equal(query.inputs, train.inputs[:, 2:])
    assert support.tasks == query.tasks == train.tasks
    for k in range(4):  # no episode appears on both sides
        for s in support.inputs[k]:
            assert not any(torch.equal(s, q) for q in query.inputs[k])
    for bad in (0, 6, 2.5):
        with pytest.raises(ValueError, match=r"support_episodes expected an int in \[1, 5\]"):
            split_support_query(train, bad)  # type: ignore[arg-type]


def test_task_data_checks_its_shapes(data: tuple) -> None:
    train, _ = data
    with pytest.raises(ValueError, match=r"TaskData.targets: expected shape \(4, 6, 30, 3\), got \(4, 6, 30, 2\)"):
        dataclasses.replace(train, targets=train.targets[..., :2])
    with pytest.raises(ValueError, match=r"TaskData\.tasks: expected 4 tasks, got 3"):
        dataclasses.replace(train, tasks=train.tasks[:3])
