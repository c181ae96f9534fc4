"""Reports of a run directory: statistics tables, seaborn figures, report.md and report.html.

``build_report(run_dir, out_dir=None)`` is the entry point. The modules, leaf to root:
load (read and validate a run), metrics (what each metric means), query (rows -> one value per
run), stats (IQM, bootstrap, probability of improvement), tables and complexity (statistics
tables), overview / results / figures (sections),
document (the report as data; figures as Plots still to draw), draw (draws the Plots with plots.py, in
worker processes when cores allow), markdown and html (renderers), build (all of it).
"""

from suites.report.build import build_report
from suites.report.config import ReportConfig

__all__ = ["ReportConfig", "build_report"]
