"""Every registered distribution's train / validation / test split: disjoint with the stated gap,
covering the range, fixed whatever the seeds, never produced by ``sample``; the direction tasks say
that they share their two values; the OOD test sets lie outside the training range."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from suites.tasks import TASKS, TaskParams, get_distribution
from suites.tasks.spaces import MAX_TEST_TASKS, ChoiceSpace

SHARED = {"halfcheetah-dir", "ant-dir"}
CHOICES = {"halfcheetah-crippled-joint", "ant-crippled-leg"}
CONTINUOUS = sorted(set(TASKS) - SHARED - CHOICES)
OOD = {"pendulum-mass-length", "halfcheetah-mass-damping"}
README = Path(__file__).parents[3] / "suites" / "tasks" / "README.md"


def _points(tasks: list[TaskParams]) -> np.ndarray:
    return np.array([list(t.values()) for t in tasks], dtype=np.float64)


def _splits(name: str, train: int = 2000) -> dict[str, list[TaskParams]]:
    dist = get_distribution(name)
    return {
        "train": dist.sample(train, np.random.default_rng(0)),
        "validation": dist.validation_tasks(MAX_TEST_TASKS),
        "test": dist.test_tasks(MAX_TEST_TASKS),
    }


def test_every_distribution_has_all_three_splits() -> None:
    assert len(TASKS) == 9
    for name in TASKS:
        dist = get_distribution(name)
        for tasks in (dist.sample(3, np.random.default_rng(0)), dist.validation_tasks(3), dist.test_tasks(3)):
            assert len(tasks) == 3 and all(t.task == name for t in tasks)
            for t in tasks:
                dist.check(t)
        assert dist.shares_values == (name in SHARED)
        assert dist.has_ood == (name in OOD)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_splits_are_the_stated_gap_apart(name: str) -> None:
    space = get_distribution(name).space
    gap, ranges = space.gap, space.ranges  # type: ignore[attr-defined]
    assert gap == 0.05
    sets = {k: _points(v) / ranges for k, v in _splits(name).items()}
    nearest = []
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        d = np.abs(sets[a][:, None, :] - sets[b][None, :, :]).max(-1)  # L-inf, in units of each range
        assert d.min() >= gap - 1e-12, (name, a, b, d.min())
        nearest.append(d.min())
    # the bound is tight: with 2000 training draws the nearest pair comes close to it
    assert min(nearest) < 1.5 * gap, nearest


@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_splits_cover_the_range(name: str) -> None:
    dist = get_distribution(name)
    space = dist.space
    origin = space._origin()  # type: ignore[attr-defined]
    for split, tasks in _splits(name).items():
        u = (_points(tasks) - origin) / space.ranges  # type: ignore[attr-defined]
        for i in range(u.shape[1]):
            # every split reaches both halves of every coordinate's range ...
            assert u[:, i].min() < 0.4 and u[:, i].max() > 0.6, (name, split, i)
            if u.shape[1] == 2:  # ... and, on a 2-D grid, every row and column of cells
                cells = np.clip(np.floor(u[:, i] * space.cells), 0, space.cells - 1)  # type: ignore[attr-defined]
                assert set(cells.astype(int)) == set(range(space.cells)), (name, split, i)  # type: ignore[attr-defined]
        if split == "train":  # training reaches the ends of the range
            assert u.min() < 0.01 and u.max() > 0.99, name


@pytest.mark.parametrize("name", sorted(TASKS))
def test_sample_draws_training_tasks_only(name: str) -> None:
    dist = get_distribution(name)
    held_out = set(dist.validation_tasks(MAX_TEST_TASKS)) | set(dist.test_tasks(MAX_TEST_TASKS))
    for seed in range(3):
        train = dist.sample(1000, np.random.default_rng(seed))
        if name in SHARED:
            assert {t["direction"] for t in train} == {t["direction"] for t in held_out} == {1, -1}
            assert all(dist.split_of(t) is None for t in train)  # no split owns a shared value
            continue
        assert not set(train) & held_out
        assert {dist.split_of(t) for t in train} == {"train"}
    if name not in SHARED:
        assert {dist.split_of(t) for t in dist.validation_tasks(MAX_TEST_TASKS)} == {"validation"}
        assert {dist.split_of(t) for t in dist.test_tasks(MAX_TEST_TASKS)} == {"test"}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_validation_and_test_sets_are_fixed_whatever_the_seeds(name: str) -> None:
    dist = get_distribution(name)
    val, test = dist.validation_tasks(20), dist.test_tasks(20)
    np.random.seed(123)
    torch.manual_seed(123)
    dist.sample(50, np.random.default_rng(99))  # a run's own draws do not move them
    assert dist.validation_tasks(20) == val and dist.test_tasks(20) == test
    assert dist.validation_tasks(5) == val[:5] and dist.test_tasks(5) == test[:5]  # prefixes
    if name not in SHARED:
        assert not set(val) & set(test)
    if name in CONTINUOUS:
        assert len(set(val)) == len(set(test)) == 20


def test_choice_splits_are_the_stated_ones() -> None:
    joint = get_distribution("halfcheetah-crippled-joint").space
    leg = get_distribution("ant-crippled-leg").space
    assert isinstance(joint, ChoiceSpace) and isinstance(leg, ChoiceSpace)
    assert (joint.train, joint.validation, joint.test) == ((0, 2, 3, 5), (1,), (4,))  # thighs, feet / bshin / fshin
    assert (leg.train, leg.validation, leg.test) == ((0, 1), (2,), (3,))


@pytest.mark.parametrize("name", sorted(SHARED))
def test_direction_tasks_say_they_share_their_values(name: str) -> None:
    dist = get_distribution(name)
    assert "shared by train and test (and validation)" in dist.describe()
    assert [t["direction"] for t in dist.validation_tasks(4)] == [1, -1, 1, -1]
    assert dist.validation_tasks(4) == dist.test_tasks(4)
    module_doc = sys.modules[dist.env_class.__module__].__doc__ or ""
    assert "direction tasks share" in " ".join(module_doc.split()), name


def test_readme_states_each_split() -> None:
    text = README.read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9-]+)` \|.*$", text, re.MULTILINE)}
    assert set(rows) >= set(TASKS)
    for name in SHARED:
        assert "shared" in rows[name], rows[name]
    for name in CONTINUOUS:
        assert "cells" in rows[name], rows[name]
    assert "validation {bshin}, test {fshin}" in rows["halfcheetah-crippled-joint"]
    assert "validation leg {3}, test leg {4}" in rows["ant-crippled-leg"]


@pytest.mark.parametrize("name", sorted(OOD))
def test_ood_test_tasks_lie_outside_the_training_range(name: str) -> None:
    dist = get_distribution(name)
    space = dist.space
    ood = dist.ood_test_tasks(MAX_TEST_TASKS)
    assert ood == dist.ood_test_tasks(MAX_TEST_TASKS) and dist.ood_test_tasks(3) == ood[:3]
    x = _points(ood)
    low, high = np.asarray(space.low), np.asarray(space.high)  # type: ignore[attr-defined]
    beyond = np.maximum(low - x, x - high).max(1) / space.ranges[0]  # type: ignore[attr-defined]
    assert beyond.min() >= space.gap - 1e-12  # type: ignore[attr-defined]
    assert (x < low).any() and (x > high).any()
    assert {dist.split_of(t) for t in ood} == {"ood"}
    for t in ood[:3]:
        env = dist.make_raw_env(t)  # validate accepts them: their envs build and step
        env.reset(seed=0)
        for _ in range(50):
            obs = env.step(env.action_space.sample())[0]
        assert np.isfinite(obs).all()
    train = dist.sample(5000, np.random.default_rng(0))
    assert not {dist.split_of(t) for t in train} - {"train"}


def test_distributions_without_ood_say_so() -> None:
    with pytest.raises(ValueError, match="'halfcheetah-vel': no out-of-distribution test set"):
        get_distribution("halfcheetah-vel").ood_test_tasks(2)
    with pytest.raises(ValueError, match=r"n expected an int in \[1, 100\], got 0"):
        get_distribution("ant-goal").validation_tasks(0)
