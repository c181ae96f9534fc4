"""Parameter spaces: validation messages, the train / test split, sampling distributions."""

import numpy as np
import pytest

from suites.tasks.spaces import MAX_TEST_TASKS, BoxSpace, ChoiceSpace, DiscSpace, TaskParams

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


def test_training_draws_that_hit_the_test_pool_are_rejected() -> None:
    # A training generator on the test stream's seed would reproduce the test pool exactly;
    # every one of those draws must be rejected, so none of the test points comes back.
    pool = set(BOX.test_set("t", MAX_TEST_TASKS, seed=3))
    train = BOX.sample_train("t", 150, np.random.default_rng(3), seed=3)
    assert len(train) == 150
    assert not pool & set(train)
    plain = BOX._as_params("t", BOX._draw(150, np.random.default_rng(3)))
    assert len(pool & set(plain)) == MAX_TEST_TASKS  # without the check they would collide


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
