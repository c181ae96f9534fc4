"""suites.report.compact: the README's compact tables are queries on the rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from suites.report.compact import COLUMNS, compact_table, main
from suites.report.config import ReportConfig
from suites.report.load import load_run
from suites.report.tables import per_task
from tests.suites.report.synthetic_run import make_run_dir


def _parse(text: str) -> tuple[float, float, float]:
    est, rest = text.split(" [")
    low, high = rest.rstrip("]").split(", ")
    return float(est), float(low), float(high)


def test_a_cell_is_the_seed_mean_at_its_step_with_the_per_task_interval(tmp_path: Path) -> None:
    run = load_run(make_run_dir(tmp_path / "run"))
    config = ReportConfig()
    table = compact_table(run.rows, "dynamics", COLUMNS["dynamics"], config)
    rows = run.rows
    for (task, model), line in table.set_index(["task", "model"]).iterrows():
        at0 = rows.loc[(rows.protocol == "dynamics") & (rows.metric == "query_mse") & (rows.arm == "maml")
                       & (rows.step == 0) & (rows.task == task) & (rows.model == model)]  # fmt: skip
        est, low, high = _parse(line["dynamics query_mse, maml k=0"])
        assert est == pytest.approx(at0["value"].mean(), rel=2e-3)  # 3 seeds: IQM == mean
        assert low <= est <= high
    # at the summary step the interval is the report's own (same estimator, same generator key)
    report = per_task(rows, "dynamics", config).query("metric == 'query_mse' and arm == 'maml'")
    for _, ref in report.iterrows():
        cell = table.set_index(["task", "model"]).loc[(ref["task"], ref["model"]), "dynamics query_mse, maml k=3"]
        assert _parse(cell) == pytest.approx((ref["iqm"], ref["iqm_low"], ref["iqm_high"]), rel=5e-3)


def test_online_mse_column_averages_the_steps_after_the_switch(tmp_path: Path) -> None:
    run = load_run(make_run_dir(tmp_path / "run"))
    table = compact_table(run.rows, "dynamics", [("online_mse", "maml+adapter", None)], ReportConfig())
    task, model = table.loc[0, "task"], table.loc[0, "model"]
    rows = run.rows
    sub = rows.loc[(rows.metric == "online_mse") & (rows.arm == "maml+adapter") & (rows.task == task)
                   & (rows.model == model) & (rows.step >= 0)]  # fmt: skip
    want = sub.groupby("seed")["value"].mean().mean()
    assert _parse(table.loc[0, "dynamics online_mse, maml+adapter"])[0] == pytest.approx(want, rel=2e-3)


def test_cli_prints_a_markdown_table_per_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(make_run_dir(tmp_path / "run"))]) == 0
    out = capsys.readouterr().out
    assert "dynamics:" in out and "| task | model | dynamics query_mse, maml k=0 |" in out
    assert "policy:" in out and "mpc:" in out and "mpc return, maml |" in out


def test_cli_names_a_missing_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.count("\n") == 1
