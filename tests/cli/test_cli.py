"""The command line: fast help, run -> compare -> score, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from fairbench.cli import main

TINY = ["--image-size", "32", "--max-train-samples", "256", "--max-eval-samples", "128", "--epochs", "1",
        "--batch-size", "32", "--device", "cpu", "--quiet"]


def test_help_does_not_import_torch():
    code = "import sys; from fairbench.cli import main\ntry:\n    main(['run', '--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
    assert time.time() - t0 < 10


def test_run_then_rerun_then_compare(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "erm", *TINY, "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr()
    assert "DoB" in out.out and "Max/Min" in out.out and "run folder:" in out.out
    assert main(["run", "erm", *TINY, "--runs-dir", str(runs)]) == 0
    assert "already done" in capsys.readouterr().err
    assert main(["compare", "--runs-dir", str(runs), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["method"] == "erm" and rows[0]["needs"] == "T" and rows[0]["seeds"] == 1
    for fmt in ("table", "markdown", "csv", "latex"):
        assert main(["compare", "--runs-dir", str(runs), "--format", fmt]) == 0
        assert "erm" in capsys.readouterr().out


def test_compare_spread_over_seeds(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in ("0", "1"):
        assert main(["run", "erm", *TINY, "--seed", seed, "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    assert main(["compare", "--runs-dir", str(runs), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["seeds"] == 2 and row["accuracy_ci95"] is not None


def test_unknown_method_and_key_are_clear_errors(tmp_path, capsys):
    assert main(["run", "no_such_method", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown method 'no_such_method'" in capsys.readouterr().err
    assert main(["run", "erm", "--set", "train.nope=1", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train.nope" in err and "train.epochs" in err


def test_score_reproduces_fairlearn(tmp_path, capsys):
    fairlearn = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"y": rng.integers(0, 2, n), "p": rng.integers(0, 2, n),
                          "race": rng.choice(["a", "b", "c"], n), "sex": rng.choice(["M", "F"], n)})
    path = tmp_path / "preds.csv"
    frame.to_csv(path, index=False)
    assert main(["score", str(path), "--target", "y", "--pred", "p", "--groups", "race,sex", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    groups = frame["race"] + "|" + frame["sex"]
    dp = fairlearn.demographic_parity_difference(frame["y"], frame["p"], sensitive_features=groups)
    eo = fairlearn.equalized_odds_difference(frame["y"], frame["p"], sensitive_features=groups)
    assert report["dp_difference"] == pytest.approx(100 * dp, abs=1e-9)
    assert report["eodds_difference"] == pytest.approx(100 * eo, abs=1e-9)
    assert report["accuracy"] == pytest.approx(100 * (frame["y"] == frame["p"]).mean())
    assert main(["score", str(path), "--target", "y", "--pred", "p", "--groups", "race,sex"]) == 0
    assert "DoB" in capsys.readouterr().out


def test_list_methods_shows_needs(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "erm" in out and " T " in out
    for kind in ("datasets", "backbones", "metrics"):
        assert main(["list", kind]) == 0
    assert "synthface" in capsys.readouterr().out
