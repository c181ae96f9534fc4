"""The report's settings."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Attributes:
    reps: stratified-bootstrap repetitions per interval (rliable uses 50,000; 2,000 keeps a
        report to seconds; the report states the number used).
    confidence: coverage of every percentile interval.
    seed: seeds every bootstrap Generator (each interval gets its own stream, derived from this
        seed and the interval's key, so intervals do not depend on the order they are computed).
    baseline: model the probability of improvement compares against; None picks ``mlp`` when
        present (the memoryless baseline), else the first model alphabetically.
    zero_change_mse: the low normalisation reference of MSE metrics: the error of always
        predicting 0 in standardised target units (the training data's mean observation
        change), which is the target variance, 1 by construction for the standardised targets
        the dynamics protocol predicts (suites/data/normalize.py).
    dpi: resolution of the PNG figures.
    jobs: processes drawing the figures (suites.report.draw); None: one per usable core, at
        most draw.MAX_JOBS; 1 draws them in this process. The images do not depend on it.
    """

    reps: int = 2000
    confidence: float = 0.95
    seed: int = 0
    baseline: str | None = None
    zero_change_mse: float = 1.0
    dpi: int = 90
    jobs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reps, int) or self.reps < 1:
            raise ValueError(f"reps: expected a positive int, got {self.reps!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence: expected a value in (0, 1), got {self.confidence!r}")
        if self.dpi < 10:
            raise ValueError(f"dpi: expected >= 10, got {self.dpi!r}")
        if self.jobs is not None and (not isinstance(self.jobs, int) or self.jobs < 1):
            raise ValueError(f"jobs: expected None or a positive int, got {self.jobs!r}")
