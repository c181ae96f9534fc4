"""Tests of the statistics, figures and reports (suites.stats, suites.plots, suites.report)."""
