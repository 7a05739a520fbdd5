"""``fairbench export``: one long table (Parquet / CSV) of every finished run's metrics, read back
with pandas alone and turned into the summary table again."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fairbench.cli import main
from fairbench.results.export import OWN, ROW_COLUMNS, RUN_COLUMNS
from fairbench.metrics import mean_t_interval
from tests.results.report_runs import MIXED, report_suite

KEYS = ["run_id", "evaluation", "split", "group", "metric"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    suite, runs = report_suite(tmp_path_factory)
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(suite), "--runs-dir", str(runs), "--output", str(out / "all.parquet")]) == 0
    assert main(["export", str(runs), "--output", str(out / "all.csv")]) == 0  # the suite's runs as a plain folder
    return suite, runs, pd.read_parquet(out / "all.parquet"), pd.read_csv(out / "all.csv")


def test_one_row_per_run_evaluation_split_group_metric(exported):
    _, runs, frame, _ = exported
    assert {*RUN_COLUMNS, *ROW_COLUMNS} <= set(frame.columns)
    assert not frame.duplicated(KEYS).any()
    assert frame["run_id"].nunique() == 6 and set(frame["split"]) == {"val", "test"}
    erm = frame[frame["method"] == "erm"]
    assert set(erm["evaluation"]) == {OWN, "synthface-test"}  # the suite's cross-dataset evaluation
    assert sorted(erm.drop_duplicates("run_id")["trial"]) == [0, 0, 1, 1]  # from the suite's search
    for run_id, rows in frame.groupby("run_id"):  # each number is the one its run recorded
        metrics = json.loads((runs / run_id / "metrics.json").read_text())
        own_test = rows[(rows["evaluation"] == OWN) & (rows["split"] == "test")]
        pooled = own_test[own_test["group"].isna()].set_index("metric")["value"]
        assert pooled["accuracy"] == metrics["test"]["accuracy"] and pooled["dob"] == metrics["test"]["dob"]
        groups = own_test[own_test["metric"] == "accuracy"].dropna(subset=["group"]).set_index("group")["value"]
        assert groups.to_dict() == metrics["test"]["group_accuracy"]
        support = own_test[own_test["metric"] == "n"].dropna(subset=["group"]).set_index("group")["value"]
        assert support.to_dict() == {g: s["n"] for g, s in metrics["test"]["group_support"].items()}
        config = json.loads((runs / run_id / "config.json").read_text())
        first = rows.iloc[0]
        assert first["seed"] == config["train"]["seed"] and first["config.train.lr"] == config["train"]["lr"]
        assert first["config.data.name"] == "synthface" and first["git_revision"]
        assert first["cost_train_flops"] == metrics["cost"]["train_flops"] and first["device"] == "cpu"


def test_the_summary_table_recomputed_from_the_export(exported, capsys):
    suite, runs, frame, _ = exported
    assert main(["compare", "--suite", str(suite), "--runs-dir", str(runs), "--layout", "summary", "--format", "json",
                 MIXED]) == 0
    expected = {(r["method"], r["setting"], r["eval"]): r for r in json.loads(capsys.readouterr().out)}
    pooled = frame[(frame["split"] == "test") & frame["group"].isna()]
    pooled = pooled.assign(eval=pooled["eval_dataset"].where(pooled["evaluation"] == OWN,
                                                             pooled["eval_dataset"] + " [evaluation]"))
    wide = pooled.pivot_table(index=["method", "setting", "eval", "seed"], columns="metric", values="value").reset_index()
    assert len(wide.groupby(["method", "setting", "eval"])) == len(expected)
    for key, seeds in wide.groupby(["method", "setting", "eval"]):
        row = expected[key]
        assert len(seeds) == row["seeds"]
        for metric in ("accuracy", "worst_group_accuracy", "dob"):
            mean, half, _ = mean_t_interval(seeds[metric].to_numpy())
            assert mean == pytest.approx(row[metric]) and half == pytest.approx(row[f"{metric}_ci95"], nan_ok=True)


def test_csv_holds_the_same_rows_without_the_trial(exported):
    _, _, frame, csv = exported
    assert len(csv) == len(frame) and list(csv.columns) == list(frame.columns)
    assert csv["trial"].isna().all()  # a plain runs folder does not record the search trial
    a = frame.sort_values(KEYS, na_position="first").reset_index(drop=True)
    b = csv.sort_values(KEYS, na_position="first").reset_index(drop=True)
    assert a["value"].to_numpy() == pytest.approx(b["value"].to_numpy(), nan_ok=True)
    assert (a["run_id"] == b["run_id"]).all()


def test_bad_export_arguments_fail_with_one_line_and_write_nothing(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["export", str(tmp_path / "runs"), "--output", str(tmp_path / "all.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "all.json" in err and ".parquet or .csv" in err
    assert main(["export", str(tmp_path / "nowhere"), "--output", str(tmp_path / "all.csv")]) == 2
    assert "no such suite file or runs folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "runs"), "--output", str(tmp_path / "all.csv")]) == 1
    assert "no finished runs" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
