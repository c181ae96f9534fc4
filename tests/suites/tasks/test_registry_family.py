"""tasks_of_family: the protocols' task lists come from the distributions' families."""

import pytest

from suites.tasks import TASKS, get_distribution, tasks_of_family


def test_families_partition_the_registry() -> None:
    dynamics, reward = tasks_of_family("dynamics"), tasks_of_family("reward")
    assert set(dynamics) | set(reward) == set(TASKS) and not set(dynamics) & set(reward)
    assert set(dynamics) == {"pendulum-mass-length", "halfcheetah-mass-damping", "halfcheetah-crippled-joint",
                             "ant-crippled-leg"}  # fmt: skip
    assert all(get_distribution(name).family == "reward" for name in reward)
    with pytest.raises(ValueError, match="family: expected 'dynamics' or 'reward', got 'physics'"):
        tasks_of_family("physics")
