"""Comparison tables in the paper's layouts, on the checked-in golden run records.

Golden texts live in tests/golden/golden_tables/. After a deliberate change, regenerate them with
``FAIRBENCH_REGEN_GOLDEN=1 .venv/bin/pytest tests/results/test_tables.py`` and read every changed file
(git diff) before checking it in.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.cli import main
from fairbench.results.reporting import compare
from fairbench.runs.catalog import finished, load_records
from fairbench.suites.suite import Suite
from fairbench.results.published import paper_tables
from fairbench.results.render import render
from fairbench.results.table_layout import build_tables

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN_RUNS = HERE.parent / "golden" / "golden_runs"
GOLDEN_TABLES = HERE.parent / "golden" / "golden_tables"
#: the transcription of the paper's tables that paper_results.json came from (docs/specs-notes.md), kept here so the check always runs
SPEC = HERE.parent / "golden" / "paper-results.md"
REGEN = os.environ.get("FAIRBENCH_REGEN_GOLDEN") == "1"

# layout -> the runs it is shown on (a suite file, or None for every golden run)
CASES = {"summary": None, "groups": "paper-gender.toml", "methods": "paper-gender.toml",
         "attributes": "paper-celeba.toml", "min-group": "paper-celeba.toml"}
EXT = {"table": "txt", "markdown": "md", "latex": "tex", "csv": "csv", "json": "json"}


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN_TABLES / name
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"missing golden file {path}: run with FAIRBENCH_REGEN_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from the golden file (regenerate only if the change is meant)"


# -- the golden records themselves ----------------------------------------------------------------

def test_golden_records_are_consistent():
    """Every stored report is what the metric code computes from the stored predictions, and every
    folder is named by the run id of its configuration."""
    from fairbench.config import RunConfig, run_id
    from fairbench.evaluation.predict import report_for

    records, problems = load_records(GOLDEN_RUNS)
    assert not problems
    done, skipped = finished(records)
    assert len(done) == 28 and sorted(s[1].split(":")[0] for s in skipped) == ["failed", "incomplete"]
    for rec in records:
        cfg = RunConfig.model_validate({k: v for k, v in rec.config.items() if k != "run_id"})
        assert run_id(cfg) == rec.run_id == rec.config["run_id"]
    n_evaluations = 0
    for rec in done:
        metrics = rec.metrics()
        for split in ("test", "val"):
            frame = pd.read_csv(rec.path / f"predictions_{split}.csv", keep_default_na=False)
            order = list(metrics[split]["group_accuracy"])
            assert _same(report_for(frame, order), metrics[split]), (rec.run_id, split)
        for ev in rec.evaluations()[1:]:
            frame = pd.read_csv(ev.predictions, keep_default_na=False)
            assert _same(report_for(frame, list(ev.report["group_accuracy"])), ev.report), (rec.run_id, ev.dataset)
            n_evaluations += 1
    assert n_evaluations == 6 * 3


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return {str(k) for k in a} == {str(k) for k in b} and all(_same(a[k], b.get(k, b.get(str(k)))) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)
    return a == b


# -- golden tables -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(EXT))
@pytest.mark.parametrize("layout", list(CASES))
def test_layout_golden(layout, fmt):
    suite = Suite.load(ROOT / "benchmarks" / CASES[layout]) if CASES[layout] else None
    text, skipped = compare(GOLDEN_RUNS, layouts=[layout], fmt=fmt, suite=suite)
    assert text
    if suite is None:  # the failed and the incomplete record, each with its reason
        assert sorted((r.split("-")[0], why) for r, why in skipped) == [
            ("fineface", "failed: RuntimeError: DataLoader worker was killed (out of memory)"),
            ("jtt", "incomplete: process 4242 died during epoch 2")]
    _check_golden(f"{layout}.{EXT[fmt]}", text)
    if fmt == "json":
        json.loads(text)
    if fmt == "csv" and layout != "summary":  # long format: one line per cell
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        empty = frame[frame["value"] == ""]
        assert (empty["note"] != "").all(), "an empty cell without its reason"


def test_table5_cli_on_the_paper_setting(capsys):
    """`fairbench compare --suite benchmarks/paper-gender.toml`: the table-5 layout first, with the paper's rows."""
    assert main(["compare", "--runs-dir", str(GOLDEN_RUNS), "--suite", str(ROOT / "benchmarks" / "paper-gender.toml")]) == 0
    out = capsys.readouterr().out
    first = out.split("\n\n== groups ==")[0]
    assert "Method comparison, accuracy (%) per race" in first and "[paper table 5]" in first
    for model in ("A: Multi-task (Das et al.)", "B: Adversarial debiasing (Zhang et al.)",
                  "C: Consistency regularization (Krishnan & Rattani)", "D: Deep generative views (Ramachandran & Rattani)"):
        assert model in first
    lines = first.splitlines()
    row = next(line for line in lines if line.startswith("FineFACE "))
    assert "96.21" in row and "0.26" in row and "1.008" in row and "paper, table 5" in row
    assert sum("Δ ours − paper (table 5)" in line for line in lines) == 4  # erm has no table-5 row
    # the groups layout follows, with tables 2, 3 and 4
    assert "[paper table 2]" in out and "[paper table 3]" in out and "[paper table 4]" in out


def test_per_race_accuracy_is_recomputed_from_predictions():
    """Table 5's race columns pool the samples of a race; they are not the mean of its two groups."""
    records, _ = load_records(GOLDEN_RUNS)
    done, _ = finished(records)
    (table,) = [t for t in build_tables(done, "methods", dataset="fairface", paper=False)
                if t.context["trained_on"] == "fairface"]
    erm = next(r for r in table.rows if r.labels["method"] == "erm")
    seeds = []
    for rec in done:
        if rec.method == "erm" and rec.dataset == "fairface":
            frame = pd.read_csv(rec.path / "predictions_test.csv")
            black = frame[frame["race"] == "Black"]
            seeds.append(100 * (black["target"] == black["pred"]).mean())
    assert erm.cells["group:Black"].value == pytest.approx(sum(seeds) / len(seeds))
    # DoB and Max/Min of that table are over the 7 races (as in the paper's table 5)
    assert table.columns[:7] and all(c.key.startswith("group:") for c in table.columns[:7])
    assert len([c for c in table.columns if c.key.startswith("group:")]) == 7


def test_empty_cells_say_why():
    records, _ = load_records(GOLDEN_RUNS)
    done, _ = finished(records)
    eyeglasses = [r for r in done if r.dataset == "celeba" and r.target == "Eyeglasses"]
    (table,) = build_tables(eyeglasses, "attributes", paper=False)
    erm = next(r for r in table.rows if r.labels["method"] == "erm")
    assert erm.cells["metric:deo"].text() == "n/a: undefined (fewer than 2 groups with positives)"
    assert erm.cells["metric:tpr"].empty is False
    text = render(build_tables(done, "min-group"), "markdown")
    assert "n/a: no run" in text  # attributes of the paper's table 8 that the golden set did not train
    text = render(build_tables(done, "groups", dataset="lfwa"), "markdown")
    assert "—: illegible in the paper's text copy" in text  # the LFWA+ baseline group accuracies of table 3


def test_paper_rows_only_for_the_paper_setting():
    """The synthface runs have no published table; the FairFace runs show theirs unless --no-paper,
    and a recipe other than the paper's needs --paper."""
    records, _ = load_records(GOLDEN_RUNS)
    done, _ = finished(records)
    synth = [r for r in done if r.dataset == "synthface"]
    assert all(not t.context["paper_tables"] for t in build_tables(synth, "groups", paper=True))
    fair = [r for r in done if r.dataset == "fairface"]
    assert build_tables(fair, "groups", dataset="fairface")[0].context["paper_tables"] == ["2"]
    assert build_tables(fair, "groups", dataset="fairface", paper=False)[0].context["paper_tables"] == []
    for rec in fair:  # the same runs as if trained at 224 px
        rec.identity = {**rec.identity, "data.image_size": 224}
    (auto,) = build_tables(fair, "groups", dataset="fairface")
    assert auto.context["paper_tables"] == [] and any("--paper shows it anyway" in n for n in auto.notes)
    (forced,) = build_tables(fair, "groups", dataset="fairface", paper=True)
    assert forced.context["paper_tables"] == ["2"]
    assert any("recipe differs: data.image_size 224 (paper: 448)" in n for n in forced.notes)


def test_needs_column_comes_from_the_method_declaration():
    records, _ = load_records(GOLDEN_RUNS)
    done, _ = finished(records)
    (table,) = build_tables([r for r in done if r.dataset == "synthface"], "methods")
    needs = {r.labels["method"]: r.labels["needs"] for r in table.rows}
    assert needs == {"erm": "T", "groupdro": "T+A"}
    assert "needs" not in build_tables(done, "groups", dataset="fairface")[0].label_titles
    assert "needs" in build_tables(done, "groups", dataset="fairface", needs=True)[0].label_titles


# -- the paper's numbers as package data -------------------------------------------------------------

def test_paper_results_are_the_specs_tables_cell_for_cell():
    md = SPEC.read_text()
    tables = {t.id: t for t in paper_tables()}
    assert sorted(tables) == [str(i) for i in range(2, 9)]
    for m in re.finditer(r"^## Table (\d) — .*?\n(.*?)(?=^## |\Z)", md, re.S | re.M):
        lines = [line for line in m.group(2).splitlines() if line.startswith("|")]
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]
        t = tables[m.group(1)]
        if t.layout == "min-group":
            assert [[r["attribute"], *r["values"]] for r in t.rows] == rows
            continue
        assert len(rows) == len(t.rows)
        for md_row, row in zip(rows, t.rows):
            values = md_row[-len(t.columns):]
            expected = [None if v in ("", "(illegible in the text copy)") else v for v in values]
            assert row["values"] == expected, (t.id, row["model"])
            assert row["model"] in md_row
            if "needs" in row:
                assert row["needs"] == md_row[1]
        header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
        assert [c["label"] for c in t.columns] == header[-len(t.columns):]


def test_rows_at_chance_get_a_note():
    """A model that guesses has near-zero group gaps: the table says so instead of letting the
    fairness columns read as fair. Every seed must be within the margin of 100/K %."""
    from fairbench.results.notes import CHANCE_MARGIN_PP, chance_notes

    # the margin is inclusive: 100/K +- margin is at chance, a hair beyond is not
    edge = 50.0 + CHANCE_MARGIN_PP
    assert chance_notes("m", {0: {"accuracy": edge, "num_classes": 2}})
    assert chance_notes("m", {0: {"accuracy": edge + 0.1, "num_classes": 2}}) == []
    at_chance = {0: {"accuracy": 50.2, "num_classes": 2}, 1: {"accuracy": 48.1, "num_classes": 2}}
    (note,) = chance_notes("jtt", at_chance)
    assert note.startswith("jtt: at chance on every seed") and "50 %" in note
    # one seed learned: no note (the interval already shows the spread)
    assert chance_notes("groupdro", {0: {"accuracy": 50.0, "num_classes": 2}, 1: {"accuracy": 76.4, "num_classes": 2}}) == []
    # three classes: chance is 33.3 %, so 50 % is not chance
    assert chance_notes("m", {0: {"accuracy": 50.0, "num_classes": 3}}) == []
    assert chance_notes("m", {0: {"accuracy": 34.0, "num_classes": 3}})
    # no class count (e.g. an attribute mean): say nothing rather than guess
    assert chance_notes("m", {0: {"accuracy": 50.0}}) == []


# -- DoB: the convention of each published table ------------------------------------------------------

def test_each_published_dob_convention_reproduces_the_printed_rows():
    """Recompute every printed DoB from the printed group accuracies: the table's ddof gives it
    (rounded as printed), the other ddof does not, for at least one row of every table."""
    checked = 0
    for t in paper_tables():
        groups = [i for i, c in enumerate(t.columns) if "group" in c]
        dob = [i for i, c in enumerate(t.columns) if c.get("metric") == "dob"]
        if not dob:
            assert t.dob_ddof is None, t.id
            continue
        assert t.dob_ddof in (0, 1), t.id
        other_fails = False
        for row in t.rows:
            values = row["values"]
            if any(values[i] is None for i in groups):
                continue  # illegible group values (table 3's LFWA+ baseline)
            accs = np.array([float(values[i]) for i in groups])
            printed = values[dob[0]]
            digits = len(printed.split(".")[1]) if "." in printed else 0
            ours = round(float(np.std(accs, ddof=t.dob_ddof)), digits)
            if (t.id, row["model"]) == ("5", "FineFACE"):
                # 0.26 printed: neither convention (0.27 / 0.25) rounds to it; the table's note says so
                assert any("FineFACE's printed 0.26 matches neither" in n for n in t.notes)
                continue
            assert ours == pytest.approx(float(printed)), (t.id, row["model"], ours, printed)
            other_fails |= round(float(np.std(accs, ddof=1 - t.dob_ddof)), digits) != pytest.approx(float(printed))
            checked += 1
        assert other_fails, f"table {t.id}: both conventions reproduce it; its ddof is not determined"
    assert checked == 11  # table 2: 2 rows, table 3: 3, table 4: 2, table 5: rows A-D


def test_compare_with_the_paper_computes_our_dob_as_the_paper_does(capsys):
    from fairbench.metrics import dob_from_group_accuracies

    records, _ = load_records(GOLDEN_RUNS)
    done, _ = finished(records)
    fair = [r for r in done if r.dataset == "fairface"]
    erm = [r for r in fair if r.method == "erm"]
    per_seed = [r.metrics()["test"]["group_accuracy"] for r in erm]
    want = {ddof: np.mean([dob_from_group_accuracies(g, ddof=ddof) for g in per_seed]) for ddof in (0, 1)}
    assert want[0] != pytest.approx(want[1])
    (with_paper,) = build_tables(fair, "groups", dataset="fairface", paper=True)
    row = next(r for r in with_paper.rows if r.kind == "ours" and r.labels["method"] == "erm")
    assert row.cells["metric:dob"].value == pytest.approx(want[1])  # table 2: ddof 1
    assert any("DoB of every row computed with ddof 1 (sample standard deviation), as paper table 2" in n
               for n in with_paper.notes)
    (alone,) = build_tables(fair, "groups", dataset="fairface", paper=False)
    row = next(r for r in alone.rows if r.labels["method"] == "erm")
    assert row.cells["metric:dob"].value == pytest.approx(want[0])  # our own default, ddof 0
    assert not any("DoB of every row computed" in n for n in alone.notes)
    # table 4 (evaluated on CelebA) keeps ddof 0, and says so
    (celeba,) = build_tables(fair, "groups", dataset="celeba", paper=True)
    assert any("computed with ddof 0 (population standard deviation), as paper table 4" in n for n in celeba.notes)
    # the command line says it too
    assert main(["compare", "--runs-dir", str(GOLDEN_RUNS), "--layout", "groups", "--paper"]) == 0
    assert "DoB of every row computed with ddof 1 (sample standard deviation), as paper table 2" in capsys.readouterr().out


def test_a_report_recomputed_with_another_ddof_leaves_out_the_excluded_groups():
    from fairbench.results.published import with_dob_ddof

    report = {"ddof": 0, "dob": 1.0, "group_accuracy": {"a": 90.0, "b": 94.0, "c": 10.0}, "excluded_groups": ["c"],
              "undefined": []}
    assert with_dob_ddof(report, 1)["dob"] == pytest.approx(float(np.std([90.0, 94.0], ddof=1)))
    assert with_dob_ddof(report, 0) is report
    one = with_dob_ddof({"ddof": 0, "dob": 0.0, "group_accuracy": {"a": 90.0}, "undefined": []}, 1)
    assert np.isnan(one["dob"])


def test_rows_trained_under_bf16_say_so(tmp_path, capsys):
    """A GPU run with train.amp (bf16 autocast) is marked in the paper layouts and the summary;
    fp32 runs and records without environment.json add nothing."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(GOLDEN_RUNS, runs)
    records, _ = load_records(runs)
    fair = [r for r in finished(records)[0] if r.dataset == "fairface" and r.method == "erm"]
    for rec in fair:
        (rec.path / "environment.json").write_text(json.dumps({"device": "cuda:0"}))
        assert rec.config["train"]["amp"] is True  # the golden runs were made with the old default
    (table,) = build_tables(fair, "groups", dataset="fairface", paper=False)
    assert table.rows[0].labels["source"] == "ours, 3 seeds, bf16"
    assert main(["compare", "--runs-dir", str(runs), "--layout", "summary"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "bf16" in out
    for rec in fair:
        (rec.path / "environment.json").write_text(json.dumps({"device": "cpu"}))  # amp is ignored on a CPU
    (table,) = build_tables(fair, "groups", dataset="fairface", paper=False)
    assert table.rows[0].labels["source"] == "ours, 3 seeds"
    assert main(["compare", "--runs-dir", str(runs), "--layout", "summary"]) == 0
    assert "precision" not in capsys.readouterr().out


def test_setting_labels_write_large_floats_short():
    from fairbench.results.grouping import short_label

    assert (short_label(1.15e13), short_label(2.3e12), short_label(0.02), short_label(8.335e-05), short_label(12)) == \
        ("1.15e+13", "2.3e+12", "0.02", "8.335e-05", "12")


def test_compare_names_the_settings_that_differ_not_their_hash(tmp_path, capsys):
    """ERM's golden FairFace runs again at 60 epochs and under a FLOPs budget: three rows, each
    named by what sets it apart."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(GOLDEN_RUNS, runs)
    records, _ = load_records(runs)
    erm = [r for r in finished(records)[0] if r.dataset == "fairface" and r.method == "erm"]
    for rec in erm:
        for suffix, change in (("e60", {"epochs": 60}), ("budget", {"budget_flops": 1.15e13})):
            copy = runs / f"{rec.run_id}{suffix}"
            shutil.copytree(rec.path, copy)
            config = json.loads((copy / "config.json").read_text())
            config["train"].update(change)
            (copy / "config.json").write_text(json.dumps(config))
    assert main(["compare", "--runs-dir", str(runs), "--layout", "summary"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("erm ") and "fairface" in line]
    for label in ("  budget_flops=1.15e+13, epochs=25  ", "  epochs=60  ", "  epochs=25  "):  # the setting column
        assert len([line for line in lines if label in line]) == len(lines) // 3 > 0
    hashes = {r.setting_key for r in load_records(runs)[0]}
    assert not any(h in line for h in hashes for line in lines)


def test_the_selected_epoch_counts_from_1_in_new_and_old_records():
    from fairbench.runs.record import selected_epoch

    assert selected_epoch({"selection": {"rule": "accuracy", "selected_epoch": 3}}) == 3
    assert selected_epoch({"selection": {"rule": "accuracy", "epoch": 2}}) == 3  # recorded from 0 before
    assert selected_epoch({}) is None
