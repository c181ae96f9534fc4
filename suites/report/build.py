"""build_report: a run directory in, report.md + report.html + figures/ + tables/ out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from suites.report import figures, overview, results
from suites.report.config import ReportConfig
from suites.report.document import Figure, Section, Table
from suites.report.draw import Drawer, default_jobs
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


def builders(run: Run, config: ReportConfig) -> list[Callable[[], Section | None]]:
    """The section builders in reading order; each returns None when the run has no data for it.

    Builders, not sections, so that the figures of one section are drawn (in worker processes)
    while the next sections' tables are computed.
    """
    rows = run.rows
    baseline = choose_baseline(run, config)
    return [
        lambda: overview.summary(run, config),
        lambda: overview.suite(run),
        lambda: overview.tasks(run),
        lambda: overview.models(run, config),
        lambda: results.headline(rows, config),
        lambda: results.normalised(rows, config),
        lambda: results.improvement(rows, config, baseline) if baseline else None,
        lambda: results.gains(rows, config),
        lambda: figures.dynamics(rows, config),
        lambda: figures.policy(rows, config),
        lambda: figures.mpc(rows, config),
        lambda: figures.timing_section(rows, config),
        lambda: results.per_task(rows, config),
        lambda: overview.failures(run),
        lambda: overview.metadata(run),
    ]


def build_report(
    run_dir: str | Path, out_dir: str | Path | None = None, config: ReportConfig | None = None
) -> Path:
    """Build the report of one run directory.

    Args:
        run_dir: a run directory (results/README.md); missing, empty or corrupt ones raise a
            one-line ValueError naming the path and the problem.
        out_dir: where to write; default reports/<suite>/ under the current directory.
        config: bootstrap repetitions, confidence, seed, baseline, figure resolution, drawing
            processes.

    Returns:
        The output directory, holding report.md, report.html (self-contained), figures/*.png
        and tables/*.csv (every table of the report).
    """
    config = config or ReportConfig()
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path("reports") / run.suite_name
    secs: list[Section] = []
    with Drawer(config.jobs or default_jobs()) as drawer:
        for build in builders(run, config):
            section = build()
            if section is None:
                continue
            secs.append(section)
            for block in section.blocks:
                if isinstance(block, Figure):
                    drawer.submit(block.name, block.plot)
        images = drawer.images()
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for section in secs:
        for block in section.blocks:
            if isinstance(block, Table):
                block.frame.to_csv(out / "tables" / f"{block.name}.csv", index=False)
            elif isinstance(block, Figure):
                (out / "figures" / f"{block.name}.png").write_bytes(images[block.name])
    title = f"SSM-MetaRL-TestCompute report: suite {run.suite_name}"
    (out / "report.md").write_text(render_markdown(title, secs))
    (out / "report.html").write_text(render_html(title, secs, images))
    log.info("report of %s written to %s", run.path, out)
    return out
