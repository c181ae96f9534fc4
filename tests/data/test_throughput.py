"""The throughput measurement runs all three paths and reports consistent figures."""

import pytest

from suites.data.throughput import main, measure


def test_measure_reports_all_paths() -> None:
    t = measure("pendulum-mass-length", tasks=1, episodes=2, horizon=20, repeats=1)
    assert t.task == "pendulum-mass-length"
    assert min(t.raw_steps_per_s, t.collect_steps_per_s, t.vector_steps_per_s) > 0
    assert t.ratio == pytest.approx(t.collect_steps_per_s / t.raw_steps_per_s)


def test_point_nav_collection_meets_the_target() -> None:
    # DESIGN.md: collection within 15% of raw stepping. The vectorised random path runs at
    # about 2.5x raw (README in suites/tasks), so a median of 3 CPU-time pairs clears 0.85
    # with a wide margin even on the shared machine; the per-env loop it replaced sat at 0.7.
    t = measure("point-nav-2d", tasks=4, episodes=8, horizon=200, repeats=3)
    assert t.ratio >= 0.85, t


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="task: unknown name 'nope'"):
        main(["nope"])
