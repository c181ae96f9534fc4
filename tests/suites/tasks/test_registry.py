"""The task registry: names, gymnasium registration, env checker, splits, bad input."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from suites.tasks import TASKS, TaskDistribution, get_distribution

EXPECTED = {
    "pendulum-mass-length": "dynamics",
    "halfcheetah-mass-damping": "dynamics",
    "halfcheetah-crippled-joint": "dynamics",
    "ant-crippled-leg": "dynamics",
    "point-nav-2d": "reward",
    "halfcheetah-vel": "reward",
    "halfcheetah-dir": "reward",
    "ant-dir": "reward",
    "ant-goal": "reward",
}
SHARED = {"halfcheetah-dir", "ant-dir"}  # direction tasks: nothing held out but seeds


def test_task_names_and_families() -> None:
    assert set(TASKS) == set(EXPECTED)
    for name in TASKS:
        dist = get_distribution(name)
        assert isinstance(dist, TaskDistribution)
        assert (dist.name, dist.family) == (name, EXPECTED[name])
        assert dist.env_id.startswith("SSMMetaRL/")
        assert dist.horizon == (100 if name == "point-nav-2d" else 200)


def test_unknown_task_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"task: unknown name 'cheetah'; expected one of \['ant-crippled-leg'"):
        get_distribution("cheetah")


def test_gym_make_with_keyword_parameters() -> None:
    env = gym.make("SSMMetaRL/PendulumMassLength-v0", mass=1.3, length=0.7)
    assert (env.unwrapped.m, env.unwrapped.l) == (1.3, 0.7)
    assert env.spec is not None and env.spec.max_episode_steps == 200
    env.reset(seed=0)
    steps = 0
    truncated = False
    while not truncated:
        _, _, _, truncated, _ = env.step(env.action_space.sample())
        steps += 1
    assert steps == 200


@pytest.mark.filterwarnings("ignore:.*(infinity|symmetric and normalized):UserWarning")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_env_passes_gymnasium_checker(name: str) -> None:
    dist = get_distribution(name)
    task = dist.sample(1, np.random.default_rng(0))[0]
    env = dist.make_env(task)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.task == task


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_train_and_test_split(name: str) -> None:
    dist = get_distribution(name)
    test = dist.test_tasks(20)
    assert test == dist.test_tasks(20)  # fixed
    train = dist.sample(200, np.random.default_rng(1))
    assert all(t.task == name for t in train + test)
    for t in train + test:
        dist.check(t)  # inside the space
    if name in SHARED:
        assert {t["direction"] for t in train} == {t["direction"] for t in test} == {1, -1}
    else:
        assert not set(train) & set(test)
    if name.endswith("crippled-joint") or name.endswith("crippled-leg"):
        key = dist.param_names[0]
        assert not {t[key] for t in train} & {t[key] for t in test}


def test_sampling_is_seeded() -> None:
    dist = get_distribution("halfcheetah-vel")
    assert dist.sample(5, np.random.default_rng(4)) == dist.sample(5, np.random.default_rng(4))
    assert dist.sample(5, np.random.default_rng(4)) != dist.sample(5, np.random.default_rng(5))


def test_bad_parameters_and_counts() -> None:
    pend = get_distribution("pendulum-mass-length")
    with pytest.raises(
        ValueError,
        match=r"'pendulum-mass-length': parameter mass expected in \[0.5, 2.0\], got 3.0",
    ):
        pend.make_env(pend.params(mass=3.0, length=1.0))
    with pytest.raises(ValueError, match=r"parameter mass expected in \[0.5, 2.0\], got 0.1"):
        gym.make("SSMMetaRL/PendulumMassLength-v0", mass=0.1, length=1.0)
    with pytest.raises(ValueError, match=r"crippled_joint expected one of \[0, 2, 3, 5, 1, 4\], got 6"):
        get_distribution("halfcheetah-crippled-joint").params(crippled_joint=6)
    vel = get_distribution("halfcheetah-vel")
    with pytest.raises(ValueError, match="expected parameters of this task"):
        vel.make_env(pend.test_tasks(1)[0])
    with pytest.raises(ValueError, match=r"n expected an int in \[1, 100\], got 101"):
        vel.test_tasks(101)
    with pytest.raises(ValueError, match="n expected a positive int, got 0"):
        vel.sample(0, np.random.default_rng(0))


def test_env_that_fails_to_build_is_a_one_line_value_error() -> None:
    dist = get_distribution("point-nav-2d")
    with pytest.raises(ValueError) as err:
        dist.make_env(dist.test_tasks(1)[0], not_an_option=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("task 'point-nav-2d': could not build env SSMMetaRL/PointNav2D-v0")
    assert "not_an_option" in message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_set_task_validates(name: str) -> None:
    dist = get_distribution(name)
    env = dist.make_raw_env(dist.test_tasks(1)[0])
    bad = {k: 99 for k in dist.param_names}
    with pytest.raises(ValueError, match=f"task '{name}': parameter"):
        env.set_task(bad)
