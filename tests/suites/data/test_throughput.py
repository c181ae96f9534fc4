"""The throughput measurement runs all three paths and reports consistent figures."""

import pytest

from suites.data.throughput import main, measure


def test_measure_reports_all_paths() -> None:
    t = measure("pendulum-mass-length", tasks=1, episodes=2, horizon=20, repeats=1)
    assert t.task == "pendulum-mass-length"
    assert min(t.raw_steps_per_s, t.collect_steps_per_s, t.vector_steps_per_s) > 0
    assert t.ratio == pytest.approx(t.collect_steps_per_s / t.raw_steps_per_s)


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="task: unknown name 'nope'"):
        main(["nope"])
