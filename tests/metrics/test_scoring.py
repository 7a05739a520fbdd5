"""Bring your own predictions: scoring CSV / Parquet tables and their error messages."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fairbench.metrics import evaluate_predictions, read_predictions, score_file, score_frame


def _gender_frame(n=240, seed=0):
    rng = np.random.default_rng(seed)
    gender = rng.choice(["Male", "Female"], n)
    flip = rng.random(n) < 0.15
    pred = np.where(flip, np.where(gender == "Male", "Female", "Male"), gender)
    p_male = np.clip(np.where(pred == "Male", 0.9, 0.1) + rng.normal(0, 0.05, n), 0, 1)
    return pd.DataFrame(
        {
            "race": rng.choice(["White", "Black", "Indian"], n),
            "gender": gender,
            "gender_pred": pred,
            "p_female": 1 - p_male,
            "p_male": p_male,
        }
    )


def test_string_labels_intersectional_groups_match_evaluate_predictions():
    df = _gender_frame()
    r = score_frame(df, target="gender", pred="gender_pred", groups=["race", "gender"],
                    scores=["p_female", "p_male"])
    assert r["labels"] == ["Female", "Male"]
    assert r["positive_label"] == "Male"  # no "1": the second label in sorted order
    assert r["group_columns"] == ["race", "gender"]
    assert set(r["group_accuracy"]) == {f"{a}|{b}" for a in ["White", "Black", "Indian"] for b in ["Male", "Female"]}
    y = (df["gender"] == "Male").to_numpy().astype(int)
    p = (df["gender_pred"] == "Male").to_numpy().astype(int)
    g = (df["race"] + "|" + df["gender"]).to_numpy()
    ref = evaluate_predictions(y, p, g, scores=df[["p_female", "p_male"]].to_numpy())
    for key in ["accuracy", "dob", "max_min_ratio", "tpr", "deo", "deodds", "ece", "dp_difference"]:
        assert r[key] == pytest.approx(ref[key], nan_ok=True), key
    assert r["group_support"] == ref["group_support"]
    json.dumps(r)  # JSON-serialisable


def test_positive_argument_flips_the_positive_class():
    df = _gender_frame()
    male = score_frame(df, target="gender", pred="gender_pred", groups="race")
    female = score_frame(df, target="gender", pred="gender_pred", groups="race", positive="Female")
    assert female["positive_label"] == "Female"
    for grp in ["White", "Black", "Indian"]:  # TPR(Female) = 100 - FPR(Male)
        assert female["group_tpr"][grp] == pytest.approx(100 - male["group_fpr"][grp])
    assert female["accuracy"] == male["accuracy"]
    with pytest.raises(ValueError, match="does not occur"):
        score_frame(df, target="gender", pred="gender_pred", groups="race", positive="Other")


@pytest.mark.parametrize(
    "target, pred, expected",
    [
        ([0, 1, 1, 0], [0, 1, 0, 0], 1),
        ([True, False, True, False], [True, True, False, False], 1),
        (["0", "1", "1", "0"], ["1", "1", "0", "0"], "1"),
        (["no", "yes", "yes", "no"], ["no", "yes", "no", "no"], "yes"),
        ([0, 0, 0, 0], [0, 0, 0, 0], 1),  # a 0/1 target with no positives at all
    ],
)
def test_default_positive_label(target, pred, expected):
    df = pd.DataFrame({"t": target, "p": pred, "g": ["a", "b", "a", "b"]})
    r = score_frame(df, target="t", pred="p", groups=["g"])
    assert r["positive_label"] == expected
    assert r["num_classes"] == 2


def test_positive_given_as_text_for_numeric_labels():
    df = pd.DataFrame({"t": [0, 1, 1, 0], "p": [0, 1, 0, 1], "g": ["a", "b", "a", "b"]})
    r = score_frame(df, target="t", pred="p", groups=["g"], positive="0")  # as the CLI passes it
    assert r["positive_label"] == 0 and r["labels"] == [0, 1]
    assert r["tpr"] == 50.0  # of the two true 0s, one predicted 0


def test_single_non_binary_label_needs_positive():
    df = pd.DataFrame({"t": ["cat"] * 3, "p": ["cat"] * 3, "g": ["a", "b", "a"]})
    with pytest.raises(ValueError, match="positive="):
        score_frame(df, target="t", pred="p", groups=["g"])


def test_multiclass_string_labels():
    rng = np.random.default_rng(1)
    bins = ["0-2", "10-19", "3-9"]
    t = rng.choice(bins, 150)
    p = np.where(rng.random(150) < 0.7, t, rng.choice(bins, 150))
    df = pd.DataFrame({"age": t, "age_pred": p, "race": rng.choice(["A", "B"], 150)})
    r = score_frame(df, target="age", pred="age_pred", groups=["race"])
    assert r["labels"] == sorted(bins) and r["positive_label"] is None
    assert r["rate_average"] == "macro" and set(r["per_class"]) == set(bins)
    assert r["per_class"]["3-9"]["deo"] == pytest.approx(
        evaluate_predictions((t == "3-9").astype(int), (p == "3-9").astype(int), df["race"].to_numpy())["deo"]
    )
    with pytest.raises(ValueError, match="binary targets only"):
        score_frame(df, target="age", pred="age_pred", groups=["race"], positive="3-9")


def test_csv_and_parquet_files_give_the_same_report(tmp_path):
    pytest.importorskip("pyarrow")
    df = _gender_frame(seed=3)
    csv, parquet = tmp_path / "preds.csv", tmp_path / "preds.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    kw = dict(target="gender", pred="gender_pred", groups=["race", "gender"], scores=["p_female", "p_male"],
              min_support=5, ddof=1)
    a = score_file(csv, **kw)
    b = score_frame(read_predictions(parquet), **kw)
    assert a["source"] == str(csv)
    for key in ["accuracy", "dob", "deo", "deodds", "ece"]:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    for key in ["group_accuracy", "group_support", "excluded_groups", "labels", "positive_label"]:
        assert a[key] == b[key], key
    assert a["dob"] == pytest.approx(score_frame(df, **kw)["dob"])


def test_missing_column_error_names_file_column_and_available(tmp_path):
    path = tmp_path / "preds.csv"
    _gender_frame(n=10).to_csv(path, index=False)
    df = read_predictions(path)
    with pytest.raises(ValueError) as err:
        score_frame(df, target="sex", pred="gender_pred", groups=["race", "skin"])
    msg = str(err.value)
    assert str(path) in msg
    assert "'sex' (target)" in msg and "'skin' (groups)" in msg
    assert "available columns" in msg and "'gender_pred'" in msg and "'race'" in msg


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_predictions(tmp_path / "nope.csv")
    bad = tmp_path / "preds.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=r"preds\.json.*\.csv"):
        read_predictions(bad)


def test_bad_values_errors():
    df = pd.DataFrame({"t": [1, 0, None], "p": [1, 0, 1], "g": ["a", "b", None], "s": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="'t' \\(target\\).*1 missing"):
        score_frame(df, target="t", pred="p", groups=["g"])
    ok = df.assign(t=[1, 0, 1])
    with pytest.raises(ValueError, match="group column 'g'.*missing"):
        score_frame(ok, target="t", pred="p", groups=["g"])
    ok = ok.assign(g=["a", "b", "a"])
    with pytest.raises(ValueError, match="one probability column per label"):
        score_frame(ok, target="t", pred="p", groups=["g"], scores=["s"])
    r = score_frame(ok, target="t", pred="p", groups=["g"])
    assert r["accuracy"] == 100.0 and math.isnan(r["deo"])  # group b has no positives


def test_bootstrap_intervals_of_every_metric_with_a_function():
    """`fairbench score --bootstrap N`: a percentile interval over samples per metric, reproducible by seed."""
    from fairbench.metrics import bootstrap_ci
    from fairbench.metrics.fairness import degree_of_bias

    df = _gender_frame()
    r = score_frame(df, target="gender", pred="gender_pred", groups=["race"], scores=["p_female", "p_male"], bootstrap=200)
    ci = r["bootstrap"]
    assert {"accuracy", "dob", "deo", "deodds", "worst_group_accuracy", "ece"} <= set(ci)
    for name in ("accuracy", "dob", "worst_group_accuracy"):
        assert ci[name]["low"] <= r[name] <= ci[name]["high"] and ci[name]["low"] < ci[name]["high"]
    # the same numbers bootstrap_ci gives on the encoded columns (labels sorted: Female 0, Male 1)
    y = (df["gender"] == "Male").to_numpy().astype(int)
    p = (df["gender_pred"] == "Male").to_numpy().astype(int)
    direct = bootstrap_ci(degree_of_bias, y, p, df["race"].to_numpy(), n_resamples=200, seed=0, ddof=0, min_support=0)
    assert (ci["dob"]["low"], ci["dob"]["high"]) == (direct.low, direct.high)
    again = score_frame(df, target="gender", pred="gender_pred", groups=["race"], bootstrap=200)["bootstrap"]
    assert again["accuracy"] == ci["accuracy"] and "ece" not in again  # no scores: no ECE interval
    with pytest.raises(ValueError, match="bootstrap"):
        score_frame(df, target="gender", pred="gender_pred", groups=["race"], bootstrap=-1)


def test_score_cli_prints_bootstrap_intervals(tmp_path, capsys):
    from fairbench.cli import main

    path = tmp_path / "p.csv"
    _gender_frame().to_csv(path, index=False)
    assert main(["score", str(path), "--target", "gender", "--pred", "gender_pred", "--groups", "race",
                 "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "dob: 95% bootstrap interval over test samples [" in out and "(100 resamples, seed 0" in out
