"""Tests of the statistics, figures and reports (suites.report.stats, suites.report.plots, suites.report)."""
