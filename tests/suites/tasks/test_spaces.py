"""Parameter spaces: validation messages, the train / validation / test (and OOD) splits, sampling distributions."""

import numpy as np
import pytest

from suites.tasks.grid_spaces import BoxSpace, DiscSpace
from suites.tasks.spaces import MAX_TEST_TASKS, ChoiceSpace, TaskParams

BOX = BoxSpace(names=("mass", "length"), low=(0.5, 0.5), high=(2.0, 2.0))


def test_task_params_reads_like_a_dict_and_is_hashable() -> None:
    p = TaskParams("t", (("mass", 1.5), ("length", 0.7)))
    assert dict(p) == {"mass": 1.5, "length": 0.7}
    assert list(p.values()) == [1.5, 0.7]
    assert p["length"] == 0.7
    assert len({p, TaskParams("t", (("mass", 1.5), ("length", 0.7)))}) == 1
    with pytest.raises(KeyError):
        p["gravity"]


def test_box_validation_names_the_field_and_range() -> None:
    assert dict(BOX.validate("t", {"mass": 1.0, "length": 2.0})) == {"mass": 1.0, "length": 2.0}
    with pytest.raises(ValueError, match=r"task 't': parameter length expected in \[0.5, 2.0\], got 2.5"):
        BOX.validate("t", {"mass": 1.0, "length": 2.5})
    with pytest.raises(ValueError, match=r"missing \['length'\], unknown \['lenght'\]"):
        BOX.validate("t", {"mass": 1.0, "lenght": 1.0})
    with pytest.raises(ValueError, match="parameter mass expected a number, got 'heavy'"):
        BOX.validate("t", {"mass": "heavy", "length": 1.0})
    with pytest.raises(ValueError, match="expected a finite number"):
        BOX.validate("t", {"mass": float("nan"), "length": 1.0})


def test_box_test_set_is_fixed_and_a_prefix() -> None:
    a, b = BOX.test_set("t", 10, seed=7), BOX.test_set("t", 5, seed=7)
    assert a[:5] == b
    assert a == BOX.test_set("t", 10, seed=7)
    assert a != BOX.test_set("t", 10, seed=8)


def _linf(a: list[TaskParams], b: list[TaskParams], ranges: np.ndarray) -> np.ndarray:
    """Pairwise L-inf distances (len(a), len(b)) in units of each coordinate's range."""
    x = np.array([list(p.values()) for p in a]) / ranges
    y = np.array([list(p.values()) for p in b]) / ranges
    return np.abs(x[:, None, :] - y[None, :, :]).max(-1)


def test_training_draws_stay_the_gap_away_from_the_test_and_validation_pools() -> None:
    # Stricter than the old rejection of exact test points (TEST_GAP = 1e-6): a training
    # generator even on the test stream's seed lands at least 0.05 of the range from every
    # test and validation point, and the pools keep the same gap from each other.
    test = BOX.test_set("t", MAX_TEST_TASKS, seed=3)
    val = BOX.validation_set("t", MAX_TEST_TASKS, seed=3)
    train = BOX.sample_train("t", 1500, np.random.default_rng(3))
    assert len(train) == 1500 and not set(test) & set(train)
    for a, b in ((train, test), (train, val), (val, test)):
        d = _linf(a, b, BOX.ranges)
        assert d.min() >= BOX.gap - 1e-12, d.min()
    # the gap is the stated one, not a much larger accident of the draws
    assert _linf(train, test, BOX.ranges).min() < 2 * BOX.gap


def test_box_samples_cover_the_range_uniformly() -> None:
    x = np.array([list(p.values()) for p in BOX.sample_train("t", 4000, np.random.default_rng(0))])
    assert x.min() >= 0.5 and x.max() <= 2.0
    np.testing.assert_allclose(x.mean(0), [1.25, 1.25], atol=0.03)


def test_disc_is_uniform_in_area_and_validates() -> None:
    disc = DiscSpace(names=("goal_x", "goal_y"), radius=3.0)
    pts = np.array([list(p.values()) for p in disc.sample_train("t", 4000, np.random.default_rng(0))])
    r2 = (pts**2).sum(1)
    assert r2.max() <= 9.0
    assert abs(r2.mean() - 4.5) < 0.15  # E[r^2] = R^2 / 2 for uniform area
    with pytest.raises(ValueError, match=r"inside the disc of radius 3.0, got \(3.0, 1.0\)"):
        disc.validate("t", {"goal_x": 3.0, "goal_y": 1.0})


def test_box_with_an_ood_region_validates_it_and_never_samples_it() -> None:
    box = BoxSpace(names=("mass", "length"), low=(0.5, 0.5), high=(2.0, 2.0), ood_low=(0.25, 0.25),
                   ood_high=(2.75, 2.75))  # fmt: skip
    assert box.has_ood and not BOX.has_ood
    # an OOD point (mass well above the range) is valid; the band within the gap is not
    assert box.validate("t", {"mass": 2.5, "length": 1.0})["mass"] == 2.5
    assert box.split_of({"mass": 2.5, "length": 1.0}) == "ood"
    with pytest.raises(ValueError, match=r"expected inside the task range .* or, for an out-of-distribution"):
        box.validate("t", {"mass": 2.05, "length": 1.0})
    with pytest.raises(ValueError, match=r"parameter mass expected in \[0.5, 2.0\], got 3.0; out-of-distribution"):
        box.validate("t", {"mass": 3.0, "length": 1.0})
    with pytest.raises(ValueError, match=r"parameter mass expected in \[0.5, 2.0\], got 2.5$"):
        BOX.validate("t", {"mass": 2.5, "length": 1.0})  # without an OOD region, plain
    ood = box.fixed_set("t", "ood", MAX_TEST_TASKS, seed=0)
    assert ood[:5] == box.fixed_set("t", "ood", 5, seed=0)
    x = np.array([list(p.values()) for p in ood])
    outside = np.maximum(0.5 - x, x - 2.0).max(1)  # how far the farthest coordinate leaves the range
    assert outside.min() >= 0.05 * 1.5 - 1e-12 and x.min() >= 0.25 and x.max() <= 2.75
    assert (x < 0.5).any() and (x > 2.0).any()  # below and above
    train = box.sample_train("t", 3000, np.random.default_rng(0))
    assert all(box.split_of(t) == "train" for t in train)
    with pytest.raises(ValueError, match="no out-of-distribution test region"):
        BOX.fixed_set("t", "ood", 3, seed=0)
    with pytest.raises(ValueError, match="OOD box around the task range"):
        BoxSpace(names=("m",), low=(0.5,), high=(2.0,), ood_low=(0.6,), ood_high=(3.0,))


def test_bad_grids_are_refused() -> None:
    with pytest.raises(ValueError, match="cells expected an int >= 4"):
        BoxSpace(names=("m",), low=(0.0,), high=(1.0,), cells=3)
    with pytest.raises(ValueError, match=r"gap expected in \(0, 1 / cells"):
        BoxSpace(names=("m",), low=(0.0,), high=(1.0,), cells=9, gap=0.2)


def test_choice_split_and_messages() -> None:
    c = ChoiceSpace(name="joint", train=(0, 2), test=(1,))
    train = c.sample_train("t", 50, np.random.default_rng(0))
    assert {p["joint"] for p in train} == {0, 2}
    assert [p["joint"] for p in c.test_set("t", 3, seed=0)] == [1, 1, 1]
    with pytest.raises(ValueError, match=r"parameter joint expected one of \[0, 2, 1\], got 7"):
        c.validate("t", {"joint": 7})
    shared = ChoiceSpace(name="direction", train=(1, -1))
    assert [p["direction"] for p in shared.test_set("t", 4, seed=0)] == [1, -1, 1, -1]
    assert "shared by train and test" in shared.describe()
    with pytest.raises(ValueError, match="overlap"):
        ChoiceSpace(name="x", train=(0, 1), test=(1,))


def test_choice_validation_split() -> None:
    c = ChoiceSpace(name="leg", train=(0, 1), validation=(2,), test=(3,))
    assert c.choices == (0, 1, 2, 3)
    assert [p["leg"] for p in c.validation_set("t", 2, seed=0)] == [2, 2]
    assert [p["leg"] for p in c.test_set("t", 2, seed=0)] == [3, 3]
    assert {p["leg"] for p in c.sample_train("t", 50, np.random.default_rng(0))} == {0, 1}
    assert [c.split_of({"leg": v}) for v in (0, 1, 2, 3)] == ["train", "train", "validation", "test"]
    assert "{2} (validation), {3} (test)" in c.describe()
    for kwargs in ({"validation": (1,), "test": (3,)}, {"validation": (3,), "test": (3,)}):
        with pytest.raises(ValueError, match="overlap"):
            ChoiceSpace(name="x", train=(0, 1), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"validation values .* without test values"):
        ChoiceSpace(name="x", train=(0, 1), validation=(2,))
    with pytest.raises(ValueError, match="no validation values"):
        ChoiceSpace(name="x", train=(0, 1), test=(2,)).validation_set("t", 1, seed=0)
    shared = ChoiceSpace(name="direction", train=(1, -1))
    assert shared.shared and shared.split_of({"direction": 1}) is None
    assert shared.validation_set("t", 3, seed=0) == shared.test_set("t", 3, seed=0)
    assert "shared by train and test (and validation)" in shared.describe()
