"""build_report: a run directory in, report.md + report.html + figures/ + tables/ out."""

from __future__ import annotations

import logging
from pathlib import Path

from suites.report import figures, overview, results
from suites.report.config import ReportConfig
from suites.report.document import Figure, Section, Table
from suites.report.html import render_html
from suites.report.load import Run, load_run
from suites.report.markdown import render_markdown

log = logging.getLogger(__name__)


def choose_baseline(run: Run, config: ReportConfig) -> str:
    """The probability-of-improvement baseline: the configured one, else mlp, else the first."""
    models = sorted(run.rows["model"].unique())
    if config.baseline is not None:
        if config.baseline not in models:
            raise ValueError(
                f"baseline: expected one of the run's models {models}, got {config.baseline!r}"
            )
        return config.baseline
    return "mlp" if "mlp" in models else (models[0] if models else "")


def sections(run: Run, config: ReportConfig) -> list[Section]:
    """Every section the run has data for, in reading order."""
    rows = run.rows
    baseline = choose_baseline(run, config)
    candidates = [
        overview.summary(run, config),
        overview.suite(run),
        overview.tasks(run),
        overview.models(run, config),
        results.headline(rows, config),
        results.normalised(rows, config),
        results.improvement(rows, config, baseline) if baseline else None,
        results.gains(rows, config),
        figures.dynamics(rows, config),
        figures.policy(rows, config),
        figures.mpc(rows, config),
        figures.timing_section(rows, config),
        results.per_task(rows, config),
        overview.failures(run),
        overview.metadata(run),
    ]
    return [s for s in candidates if s is not None]


def build_report(
    run_dir: str | Path, out_dir: str | Path | None = None, config: ReportConfig | None = None
) -> Path:
    """Build the report of one run directory.

    Args:
        run_dir: a run directory (results/README.md); missing, empty or corrupt ones raise a
            one-line ValueError naming the path and the problem.
        out_dir: where to write; default reports/<suite>/ under the current directory.
        config: bootstrap repetitions, confidence, seed, baseline, figure resolution.

    Returns:
        The output directory, holding report.md, report.html (self-contained), figures/*.png
        and tables/*.csv (every table of the report).
    """
    config = config or ReportConfig()
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path("reports") / run.suite_name
    secs = sections(run, config)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for section in secs:
        for block in section.blocks:
            if isinstance(block, Table):
                block.frame.to_csv(out / "tables" / f"{block.name}.csv", index=False)
            elif isinstance(block, Figure):
                (out / "figures" / f"{block.name}.png").write_bytes(block.png)
    title = f"SSM-MetaRL-TestCompute report: suite {run.suite_name}"
    (out / "report.md").write_text(render_markdown(title, secs))
    (out / "report.html").write_text(render_html(title, secs))
    log.info("report of %s written to %s", run.path, out)
    return out
