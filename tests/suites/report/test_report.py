"""build_report on synthetic run directories: sections, figures, self-contained HTML, failures,
subsets of protocols, and the one-line errors of unusable directories."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from suites.report import ReportConfig, build_report
from tests.suites.report.synthetic_run import make_run_dir

FAST = ReportConfig(reps=50, dpi=30, jobs=2)
"""Small settings; figures drawn by two worker processes, the default on a 2-core machine."""

SECTIONS = [
    "Summary",
    "Suite definition",
    "Tasks",
    "Models",
    "Headline",
    "Normalised scores and ranking",
    "Probability of improvement",
    "Adaptation gain",
    "Dynamics protocol",
    "Policy protocol",
    "MPC protocol",
    "Timing protocol",
    "Per-task results",
    "Failed cells",
    "Run metadata",
]
FIGURES = [
    "params",
    "headline_intervals",
    "normalised_intervals",
    "probability_of_improvement",
    "adaptation_curves",
    "dynamics_meta_training",
    "online_error_task_switch",
    "policy_return_vs_steps",
    "policy_meta_training",
    "mpc_return_per_arm",
    "mpc_model_error",
    "complexity_fwd_bwd_ms",
    "complexity_fwd_bwd_ms_hidden",
    "complexity_peak_mem_mb",
    "step_latency",
    "maml_vmap_speedup",
    "collect_speed",
]


class _Links(HTMLParser):
    """Collects every src / href and the text of h2 headings."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_h2 = tag == "h2"
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    run = make_run_dir(root / "run", seeds=3, failed=1)
    return run, build_report(run, root / "out", FAST)


def test_report_has_every_section_figure_and_table(built: tuple[Path, Path]) -> None:
    _, out = built
    md = (out / "report.md").read_text()
    for title in SECTIONS:
        assert f"\n## {title}\n" in md, title
    for name in FIGURES:
        png = (out / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG"), name
        assert f"](figures/{name}.png)" in md, name
    tables = [
        line.split("(tables/")[1].split(".csv")[0]
        for line in md.splitlines()
        if "[CSV](tables/" in line
    ]
    assert {
        "headline",
        "normalised_scores",
        "probability_of_improvement",
        "failed_cells",
        "metadata",
        "models",
        "tasks",
        "per_task_dynamics",
    } <= set(tables)
    for name in tables:
        assert not pd.read_csv(out / "tables" / f"{name}.csv").empty, name
    assert sorted(p.stem for p in (out / "tables").glob("*.csv")) == sorted(tables)


def test_report_is_the_same_drawn_by_one_or_two_processes(built: tuple[Path, Path]) -> None:
    """Every file, figures included, byte for byte: drawing in workers changes nothing."""
    run, two = built
    one = build_report(run, two.parent / "one_process", dataclasses.replace(FAST, jobs=1))
    files = sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert sorted(f.stem for f in files if f.suffix == ".png") == sorted(FIGURES)
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_html_is_self_contained(built: tuple[Path, Path]) -> None:
    _, out = built
    parser = _Links()
    parser.feed((out / "report.html").read_text())
    parser.close()
    assert parser.h2 == SECTIONS
    srcs = [v for tag, k, v in parser.refs if k == "src"]
    assert len(srcs) == len(FIGURES)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    hrefs = [v for tag, k, v in parser.refs if k == "href"]
    assert hrefs and all(h.startswith("#") for h in hrefs)
    text = (out / "report.html").read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_headline_traces_to_rows(built: tuple[Path, Path]) -> None:
    run, out = built
    rows = pd.read_parquet(run / "rows.parquet")
    head = pd.read_csv(out / "tables" / "headline.csv")
    got = head.loc[(head["protocol"] == "dynamics") & (head["model"] == "mlp")].iloc[0]
    assert (got["metric"], got["arm"], got["step"]) == ("query_mse", "maml", 3)
    sel = rows.loc[
        (rows["protocol"] == "dynamics")
        & (rows["metric"] == "query_mse")
        & (rows["arm"] == "maml")
        & (rows["step"] == 3)
        & (rows["model"] == "mlp")
    ]
    assert got["iqm"] == pytest.approx(sps.trim_mean(sel["value"].to_numpy(), 0.25))
    assert got["runs"] == len(sel)
    # MSE normalisation: low = 1 (zero-change error), high = 0, so a score is 1 - MSE.
    norm = pd.read_csv(out / "tables" / "normalised_scores.csv")
    row = norm.loc[(norm["protocol"] == "dynamics") & (norm["model"] == "mlp")].iloc[0]
    assert row["mean"] == pytest.approx(1.0 - sel["value"].mean())


def test_failed_cells_are_listed(built: tuple[Path, Path]) -> None:
    run, out = built
    failed = pd.read_csv(out / "tables" / "failed_cells.csv")
    cells = pd.read_parquet(run / "cells.parquet")
    assert list(failed["cell_id"]) == list(cells.loc[cells["status"] == "failed", "cell_id"])
    assert (failed["status"] == "failed").all()
    md = (out / "report.md").read_text()
    assert "loss is not finite at meta-iteration 17" in md
    assert "1 not ok" in md


def test_report_of_a_subset_says_nothing_about_the_rest(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)
    rows = pd.read_parquet(run / "rows.parquet")
    rows.loc[rows["protocol"] == "policy"].to_parquet(run / "rows.parquet")
    out = build_report(run, tmp_path / "out", FAST)
    md = (out / "report.md").read_text()
    for absent in (
        "Dynamics protocol",
        "MPC protocol",
        "Timing protocol",
        "Failed cells",
        "query_mse",
        "fwd_bwd_ms",
        "model_error",
    ):
        assert absent not in md, absent
    assert "## Policy protocol" in md and "## Headline" in md
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(
        [
            "params",
            "headline_intervals",
            "normalised_intervals",
            "probability_of_improvement",
            "policy_return_vs_steps",
            "policy_meta_training",
        ]
    )


def test_default_out_dir_is_reports_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run_dir(tmp_path / "run", seeds=2)
    rows = pd.read_parquet(run / "rows.parquet")
    rows.loc[rows["metric"] == "collect_steps_per_s"].to_parquet(run / "rows.parquet")
    monkeypatch.chdir(tmp_path)
    out = build_report(run, config=FAST)
    assert out == Path("reports") / "synthetic"
    assert (tmp_path / "reports" / "synthetic" / "report.html").exists()


def _report_error(path: Path) -> str:
    """The message of the ValueError that building a report of ``path`` raises."""
    with pytest.raises(ValueError) as info:
        build_report(path, path.parent / "out", FAST)
    return str(info.value)


def test_unusable_directories_give_one_line_errors(tmp_path: Path) -> None:
    cases = [(tmp_path / "nowhere", "expected a run directory, found nothing")]
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "rows.parquet missing"))

    run = make_run_dir(tmp_path / "corrupt", seeds=2)
    (run / "rows.parquet").write_bytes(b"not a parquet file")
    cases.append((run, "rows.parquet: cannot be read"))

    run = make_run_dir(tmp_path / "nocol", seeds=2)
    pd.read_parquet(run / "rows.parquet").drop(columns="value").to_parquet(run / "rows.parquet")
    cases.append((run, r"missing column\(s\) \['value'\]"))

    run = make_run_dir(tmp_path / "badmeta", seeds=2)
    (run / "meta.json").write_text("{not json")
    cases.append((run, "meta.json: cannot be read"))

    run = make_run_dir(tmp_path / "norows", seeds=2)
    for stem in ("rows", "cells"):
        frame = pd.read_parquet(run / f"{stem}.parquet")
        frame.iloc[:0].to_parquet(run / f"{stem}.parquet")
    cases.append((run, "empty run, no rows and no cells"))

    for path, pattern in cases:
        message = _report_error(path)
        assert re.search(pattern, message), message
        assert "\n" not in message and str(path) in message, message


def test_non_finite_values_are_dropped_and_counted(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", seeds=4)
    rows = pd.read_parquet(run / "rows.parquet")
    rows = rows.loc[rows["metric"] == "collect_steps_per_s"].copy()
    rows.loc[rows.index[:3], "value"] = [np.nan, np.inf, -np.inf]
    rows.to_parquet(run / "rows.parquet")
    (run / "meta.json").write_text(json.dumps({"host": "h"}))
    out = build_report(run, tmp_path / "out", FAST)
    assert "3 rows with a non-finite value were left out." in (out / "report.md").read_text()


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reps: expected a positive int, got 0"):
        ReportConfig(reps=0)
    with pytest.raises(ValueError, match="confidence"):
        ReportConfig(confidence=1.5)
    run = make_run_dir(tmp_path / "run", seeds=2)
    with pytest.raises(ValueError, match=r"baseline: expected one of the run's models .* 'gru'"):
        build_report(run, tmp_path / "out", ReportConfig(reps=10, baseline="gru"))


def test_models_whose_counts_differ_between_protocols(tmp_path: Path) -> None:
    """Input sizes differ between tasks, so one model's cells can hold two parameter counts."""
    run = make_run_dir(tmp_path / "run", seeds=2)
    cells = pd.read_parquet(run / "cells.parquet")
    mlp = cells.index[(cells["model"] == "mlp") & (cells["status"] == "ok")]
    cells.loc[mlp, "params"] = [19_876 if i % 2 else 20_005 for i in range(len(mlp))]
    cells.to_parquet(run / "cells.parquet")
    out = build_report(run, tmp_path / "out", FAST)
    table = pd.read_csv(out / "tables" / "models.csv").set_index("model")
    assert (table.loc["mlp", "params min"], table.loc["mlp", "params max"]) == (19_876, 20_005)
    assert table.loc["mlp", "params"] in (19_940, 19_941)
