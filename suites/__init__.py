"""Suites: task distributions, data collection, protocols, suite specs, runner, statistics, reports and the CLI."""
