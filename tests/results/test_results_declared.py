"""A metric is one declaration and a layout is data: a metric declared in one module is shown by
every layout that tables metrics and by the end-of-run table; a table layout declared in a test
is rendered by ``fairbench compare`` and ``build_tables`` like a built-in. Neither edits a
fairbench module (docs/contributing.md, "A metric" and "A table layout")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fairbench import registry
from fairbench.cli import main
from fairbench.metrics.specs import EVERY_VIEW, get_spec, history_keys, metric
from fairbench.results.layouts.base import get_layout
from fairbench.results.reporting import compare
from fairbench.results.table_layout import TableLayout, build_tables
from fairbench.runs.catalog import finished, load_records

GOLDEN_RUNS = Path(__file__).resolve().parents[1] / "golden" / "golden_runs"


def _add_to_reports(node, name: str) -> None:
    """Give every stored report the metric's value, as runs scored with it installed would have it."""
    if isinstance(node, dict):
        if "accuracy" in node and "worst_group_accuracy" in node:
            node[name] = node["accuracy"] - node["worst_group_accuracy"]
        for value in node.values():
            _add_to_reports(value, name)
    elif isinstance(node, list):
        for value in node:
            _add_to_reports(value, name)


@pytest.fixture
def everywhere_metric(tmp_path):
    """A throwaway metric declared the documented way, asking for every view; golden runs that hold it."""

    @metric("test_acc_gap", title="Accuracy gap", unit="pp", better="lower", digits=1, views=(EVERY_VIEW,))
    def acc_gap(y_true, y_pred, groups):
        """Pooled minus worst-group accuracy (a test metric)."""
        return 0.0

    runs = tmp_path / "runs"
    shutil.copytree(GOLDEN_RUNS, runs)
    for path in runs.rglob("*.json"):
        data = json.loads(path.read_text())
        _add_to_reports(data, "test_acc_gap")
        path.write_text(json.dumps(data))
    yield runs
    registry.metrics._entries.pop("test_acc_gap", None)


def _metric_layouts() -> list[str]:
    """The layouts whose columns are metrics: the summary and every table layout of method rows."""
    return ["summary"] + [n for n in registry.layouts.names()
                          if isinstance(get_layout(n), TableLayout) and type(get_layout(n)).table is TableLayout.table]


def test_a_metric_declared_once_is_shown_in_every_metric_layout(everywhere_metric):
    layouts = _metric_layouts()
    assert {"summary", "groups", "methods", "attributes"} <= set(layouts)
    for name in layouts:
        text, _ = compare(everywhere_metric, layouts=[name], fmt="table")
        assert "Accuracy gap" in text, f"layout {name} does not show the declared metric"
    (table,) = [t for t in build_tables(finished(load_records(everywhere_metric)[0])[0], "groups", dataset="fairface",
                                        paper=False) if t.context["target"] == "gender"][:1]
    cells = [r.cells["metric:test_acc_gap"] for r in table.rows]
    assert all(c.digits == 1 for c in cells) and any(c.n > 0 for c in cells)
    assert "test_acc_gap" not in history_keys()  # recorded per epoch only when declared history=True


def test_the_end_of_run_table_shows_a_declared_metric(everywhere_metric):
    from rich.console import Console

    from fairbench.results.reporting import run_summary

    metrics = json.loads(next(everywhere_metric.glob("erm-*/metrics.json")).read_text())
    console = Console(record=True, width=200)
    console.print(run_summary(metrics))
    text = console.export_text()
    assert "Accuracy gap" in text and "DEOdds (sum)" in text  # its title, and a built-in's "run" title


def test_a_metric_without_views_stays_out_of_the_paper_layouts(tmp_path):
    @metric("test_quiet", title="Quiet metric", unit="pp", better="lower")
    def quiet(y_true, y_pred, groups):
        """A plugin metric with the default views (a test metric)."""
        return 0.0

    try:
        assert get_spec("test_quiet").shown_in("summary") and get_spec("test_quiet").shown_in("run")
        text, _ = compare(GOLDEN_RUNS, layouts=["groups"], fmt="table")
        assert "Quiet metric" not in text
    finally:
        registry.metrics._entries.pop("test_quiet", None)


def test_a_plugin_table_layout_is_data(capsys):
    """A layout declared here as data renders through compare and build_tables, with the paper
    layouts' machinery (seeds, intervals, notes) and titles from the metric specs."""
    from fairbench.registry import register_layout

    @register_layout("worst-and-cell")
    class WorstAndCell(TableLayout):
        summary = "worst group and worst (class, group) cell per method (a test plugin)"
        metrics = ("worst_group_accuracy", "worst_cell_accuracy", "accuracy")
        heading = "Worst group and worst cell"

    try:
        assert main(["compare", "--runs-dir", str(GOLDEN_RUNS), "--layout", "worst-and-cell", "--format", "json"]) == 0
        tables = json.loads(capsys.readouterr().out)["tables"]
        assert tables and all(t["layout"] == "worst-and-cell" for t in tables)
        assert [c["title"] for c in tables[0]["columns"]] == ["Worst-group accuracy", "Worst-cell accuracy", "Accuracy"]
        assert tables[0]["title"].startswith("Worst group and worst cell: trained on ")
        assert not tables[0]["context"]["paper_tables"]  # the paper has no such table
        records = finished(load_records(GOLDEN_RUNS)[0])[0]
        built = build_tables(records, "worst-and-cell")
        assert len(built) == len(tables) and all(r.kind == "ours" for t in built for r in t.rows)
        ours = built[0].rows[0].cells["metric:worst_group_accuracy"]
        assert ours.n > 0 and ours.text().split(" ")[0].replace(".", "").isdigit()
    finally:
        registry.layouts._entries.pop("worst-and-cell", None)


def test_build_tables_refuses_a_layout_that_is_not_a_table_layout():
    with pytest.raises(ValueError, match="not a TableLayout"):
        build_tables([], "summary")


def test_a_declared_metric_leaves_runs_that_lack_it_as_they_were():
    """Runs scored before a metric was declared do not hold it: no layout gains an empty column."""
    before = {name: compare(GOLDEN_RUNS, layouts=[name], fmt="csv")[0] for name in _metric_layouts()}

    @metric("test_later", title="Declared later", unit="pp", better="lower", views=(EVERY_VIEW,))
    def later(y_true, y_pred, groups):
        """A metric the golden runs were not scored with (a test metric)."""
        return 0.0

    try:
        after = {name: compare(GOLDEN_RUNS, layouts=[name], fmt="csv")[0] for name in _metric_layouts()}
        for name in ("summary", "groups", "attributes"):
            assert after[name] == before[name], name
        # methods regroups by race: its reports are recomputed from the predictions, with every metric
        lines = after["methods"].splitlines()
        assert any("Declared later" in line for line in lines)
        assert [line for line in lines if "Declared later" not in line] == before["methods"].splitlines()
    finally:
        registry.metrics._entries.pop("test_later", None)
