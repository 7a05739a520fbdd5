"""The known-answer script (benchmarks/known_answers.py): its statistics on constructed per-seed
numbers whose verdicts are known, and its whole pipeline on tiny real runs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_config

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "known_answers.py"


@pytest.fixture(scope="module")
def ka():
    spec = importlib.util.spec_from_file_location("known_answers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["known_answers"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_noise_floor_matches_the_binomial_formula(ka):
    # two groups: gap = |p1 - p2|, p_i ~ Binomial(n, a) / n; E|X| = sd * sqrt(2 / pi) for a normal X
    floor = ka.noise_floor(90.0, 2500, draws=40000)
    sd = math.sqrt(2 * 0.9 * 0.1 / 2500) * 100
    assert floor["gap_mean"] == pytest.approx(sd * math.sqrt(2 / math.pi), rel=0.03)
    assert floor["gap_q95"] == pytest.approx(1.96 * sd, rel=0.05)
    assert floor["dob_mean"] == pytest.approx(floor["gap_mean"] / 2, rel=1e-9)  # std of two values = half their gap
    assert ka.noise_floor(99.0, 250)["gap_mean"] > ka.noise_floor(99.0, 2500)["gap_mean"]


def _row(scenario, method, seed, worst, best, dial=math.nan, support=2500, groups=None):
    groups = groups or ({"aligned": best, "conflicting": worst} if scenario == "spurious" else {"I": best, "IV": worst})
    return {"scenario": scenario, "dial": dial, "method": method, "seed": seed, "epochs": 20,
            "accuracy": (worst + best) / 2, "worst_group_accuracy": worst, "best_group_accuracy": best,
            "gap": best - worst, "dob": (best - worst) / 2, "group_accuracy": json.dumps(groups),
            "min_group_support": support, "wall_time_s": 60.0, "last_train_loss": 0.01}


def constructed(seeds=range(5)) -> pd.DataFrame:
    """ERM keeps a gap that grows with the dial; GroupDRO and SUBG close most of it, JTT does not."""
    rows = []
    for s in seeds:
        e = 0.5 * (s - 2)  # seed-to-seed noise shared by every method of a seed
        for dial, gap in ((0.8, 30.0), (0.9, 60.0), (0.95, 90.0)):
            rows.append(_row("spurious", "erm", s, 98 - gap + e, 98 + e, dial))
        rows.append(_row("spurious", "groupdro", s, 80 + e + 0.3 * s, 90 + e, 0.95))
        rows.append(_row("spurious", "subg", s, 75 + e - 0.2 * s, 88 + e, 0.95))
        rows.append(_row("spurious", "jtt", s, 8 + e + (s % 2), 98 + e, 0.95))
        rows.append(_row("none", "erm", s, 96 + 0.1 * s, 96.5 + 0.1 * s))
        for method, iv in (("erm", 78.0), ("groupdro", 79.0), ("subg", 95.0)):  # SUBG beats the ceiling: suspect
            rows.append(_row("label_noise", method, s, iv + e, 97 + e, 0.2))
    return pd.DataFrame(rows)


def test_checks_on_numbers_with_known_verdicts(ka):
    verdicts = {c.name: c.passed for c in ka.run_checks(constructed())}
    assert verdicts["spurious_erm_gap"] is True
    assert verdicts["spurious_dose_response"] is True
    assert verdicts["spurious_groupdro_beats_erm"] is True and verdicts["spurious_subg_beats_erm"] is True
    assert verdicts["spurious_jtt_beats_erm"] is False  # +0 to +1 pp on alternate seeds: interval spans 0
    assert verdicts["none_is_upper_reference"] is True
    assert verdicts["label_noise_erm"] is True and verdicts["label_noise_groupdro"] is True
    assert verdicts["label_noise_subg"] is False  # above 1 - rate on tone IV: impossible without the flips


def test_a_gap_that_shrinks_with_the_dial_fails_the_dose_response(ka):
    frame = constructed()
    spurious_erm = (frame["scenario"] == "spurious") & (frame["method"] == "erm")
    frame.loc[spurious_erm & np.isclose(frame["dial"], 0.8), "gap"] = 95.0
    verdicts = {c.name: c for c in ka.run_checks(frame)}
    assert verdicts["spurious_dose_response"].passed is False
    assert "not monotone" in verdicts["spurious_dose_response"].note


def test_fewer_seeds_than_required_leave_checks_undecided(ka):
    checks = ka.run_checks(constructed(seeds=range(3)), min_seeds=5)
    assert checks and all(c.passed is None for c in checks)


def test_pipeline_on_tiny_real_runs(ka, tmp_path):
    from fairbench.training.run import execute

    tiny = {"n_train": 64, "n_val": 32, "n_test": 64}
    for seed in (0, 1):
        for method in ("erm", "subg"):
            execute(tiny_config(method, epochs=2, **{"data.name": "synthface-spurious", "data.image_size": 16,
                                                     "data.options": {**tiny, "agreement": 0.95}, "train.seed": seed}),
                    tmp_path / "runs")
        execute(tiny_config("erm", epochs=2, **{"data.name": "synthface-none", "data.image_size": 16,
                                                "data.options": tiny, "train.seed": seed}), tmp_path / "runs")
    frame = ka.load_runs(tmp_path / "runs")
    assert len(frame) == 6 and set(frame["scenario"]) == {"spurious", "none"}
    assert (frame["min_group_support"] == 32).all()  # 64 test images over two balanced groups
    assert set(frame.loc[frame["scenario"] == "spurious", "dial"]) == {0.95}
    checks = ka.write_report(frame, tmp_path / "out", min_seeds=5)
    assert all(c.passed is None for c in checks)  # two seeds decide nothing
    for name in ("summary.md", "per-seed.csv", "checks.json", "worst-group-vs-dial.png", "curves-spurious.png",
                 "curves-erm-scenarios.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "Paired differences" in (tmp_path / "out" / "summary.md").read_text()


def test_budget_control_pairs_the_longer_erm_with_the_usual_budget(ka):
    frame = constructed()
    longer = frame[(frame["method"] == "erm") & (frame["scenario"] == "spurious") & np.isclose(frame["dial"], 0.95)].copy()
    longer["epochs"] = 60
    longer["worst_group_accuracy"] += 5.0  # five more points on every seed
    rows = ka.budget_control(pd.concat([frame, longer], ignore_index=True))
    by = {r[2]: r[3] for r in rows if r[0] == "spurious"}
    assert by["ERM 60 epochs - ERM 20"].startswith("+5.00 pp [+5.00, +5.00]")
    # GroupDRO: 80 + e + 0.3 s; ERM at 60 epochs: 98 - 90 + e + 5; mean over s = 0..4 of 67 + 0.3 s
    assert by["groupdro 20 epochs - ERM 60"].startswith("+67.60 pp")


def test_a_setting_finished_twice_counts_once_if_identical_and_is_an_error_otherwise(ka, tmp_path):
    import shutil

    from fairbench.training.run import execute

    tiny = {"n_train": 64, "n_val": 32, "n_test": 64}
    run = execute(tiny_config("erm", epochs=1, **{"data.name": "synthface-none", "data.image_size": 16,
                                                  "data.options": tiny}), tmp_path / "runs")
    twin = tmp_path / "runs" / (run.name[:-3] + "zzz")
    shutil.copytree(run, twin)
    config = json.loads((twin / "config.json").read_text())
    (twin / "config.json").write_text(json.dumps({**config, "run_id": twin.name}))
    frame = ka.load_runs(tmp_path / "runs")
    assert len(frame) == 1 and frame["reproduced_by"].iloc[0] == twin.name
    metrics = json.loads((twin / "metrics.json").read_text())
    metrics["test"]["accuracy"] += 1.0
    (twin / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SystemExit, match="different results"):
        ka.load_runs(tmp_path / "runs")


def test_converged_erm_is_the_longest_erm_budget(ka):
    frame = constructed()
    longer = frame[(frame["method"] == "erm") & (frame["scenario"] == "spurious")].copy()
    longer["epochs"] = 60
    longer["gap"] = longer["dial"].map({0.8: 10.0, 0.9: 30.0, 0.95: 25.0})  # not monotone in the dial
    longer["worst_group_accuracy"] = longer["best_group_accuracy"] - longer["gap"]
    checks = {c.name: c for c in ka.run_checks(pd.concat([frame, longer], ignore_index=True))}
    assert "ERM (60 epochs)" in checks["spurious_erm_gap"].statement
    assert checks["spurious_erm_gap"].passed is True  # 25 pp on every seed
    assert checks["spurious_dose_response"].passed is False and "not monotone" in checks["spurious_dose_response"].note
    # against ERM's 73 + e at 60 epochs: GroupDRO's 80 + e + 0.3 s is still above, JTT's 8 + e no longer
    assert checks["spurious_groupdro_beats_erm"].passed is True
    assert checks["spurious_jtt_beats_erm"].passed is False
