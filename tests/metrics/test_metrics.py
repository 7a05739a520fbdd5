"""Metrics: definitions on hand-checked cases, the paper's table 2, multiclass, ECE,
uncertainty (bootstrap, t-interval, means over attributes) and registration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fairbench.metrics import (
    BootstrapInterval,
    accuracy,
    bootstrap_ci,
    degree_of_bias,
    demographic_parity_difference,
    deo,
    deodds,
    dob_from_group_accuracies,
    equal_opportunity_difference,
    equalized_odds_difference,
    evaluate_predictions,
    expected_calibration_error,
    group_accuracies,
    group_expected_calibration_errors,
    group_rates,
    max_min_ratio,
    max_min_ratio_from_group_accuracies,
    mean_over_attributes,
    mean_t_interval,
    t_quantile,
    worst_group_accuracy,
)

# --------------------------------------------------------------------------------------
# paper table 2 (tests/golden/paper-results.md): FairFace gender, race x gender groups
# --------------------------------------------------------------------------------------
TABLE2_GROUPS = [
    f"{race}|{gender}"
    for race in ["White", "Black", "East Asian", "SE Asian", "Latino", "Indian", "Middle E."]
    for gender in ["Male", "Female"]
]
TABLE2_BASELINE = [96.5, 89.9, 94.4, 82.4, 97.2, 88.9, 94.4, 91.5, 95.6, 92.2, 98.1, 93.3, 97.8, 92.4]
TABLE2_FINEFACE = [97.1, 97.0, 97.2, 96.2, 97.0, 96.2, 96.2, 97.0, 96.0, 96.3, 96.6, 95.9, 96.1, 95.1]


def test_table2_baseline_max_min_and_dob_from_group_accuracies():
    accs = dict(zip(TABLE2_GROUPS, TABLE2_BASELINE))
    ratio = max_min_ratio_from_group_accuracies(accs)
    assert ratio == pytest.approx(98.1 / 82.4, rel=1e-12)
    assert round(ratio, 2) == 1.19  # the paper prints 1.18 (see paper-results.md)
    assert round(dob_from_group_accuracies(accs), 2) == 4.06  # ddof 0 (default)
    assert round(dob_from_group_accuracies(accs, ddof=1), 2) == 4.22
    assert round(dob_from_group_accuracies(TABLE2_BASELINE, ddof=1), 1) == 4.2  # printed


def test_table2_fineface_row_matches_printed_values():
    assert round(max_min_ratio_from_group_accuracies(TABLE2_FINEFACE), 2) == 1.02
    assert round(dob_from_group_accuracies(TABLE2_FINEFACE), 1) == 0.6
    assert round(dob_from_group_accuracies(TABLE2_FINEFACE, ddof=1), 1) == 0.6


def _predictions_with_group_accuracies(accs_pct, per_group=1000):
    """Per-sample predictions realising the given group accuracies exactly."""
    y_true, y_pred, groups = [], [], []
    for name, acc in accs_pct.items():
        correct = round(acc * per_group / 100)
        truth = np.arange(per_group) % 2
        pred = truth.copy()
        pred[correct:] = 1 - pred[correct:]
        y_true.append(truth)
        y_pred.append(pred)
        groups += [name] * per_group
    return np.concatenate(y_true), np.concatenate(y_pred), np.array(groups)


def test_table2_baseline_end_to_end_from_predictions():
    accs = dict(zip(TABLE2_GROUPS, TABLE2_BASELINE))
    y, p, g = _predictions_with_group_accuracies(accs)
    report = evaluate_predictions(y, p, g)
    for name, acc in accs.items():
        assert report["group_accuracy"][name] == pytest.approx(acc, abs=1e-9)
    assert report["max_group_accuracy"] == pytest.approx(98.1)
    assert report["min_group_accuracy"] == pytest.approx(82.4)
    assert report["worst_group_accuracy"] == report["min_group_accuracy"]
    assert report["max_min_ratio"] == pytest.approx(98.1 / 82.4)
    assert round(report["dob"], 2) == 4.06
    assert round(evaluate_predictions(y, p, g, ddof=1)["dob"], 2) == 4.22
    # pooled accuracy over equal-size groups is the mean of the group accuracies
    assert report["accuracy"] == pytest.approx(np.mean(TABLE2_BASELINE))
    assert degree_of_bias(y, p, g) == pytest.approx(report["dob"], abs=1e-12)
    assert max_min_ratio(y, p, g) == pytest.approx(report["max_min_ratio"], rel=1e-12)


def test_overall_accuracy_is_pooled_not_mean_of_groups():
    # group a: 9/10 correct, group b: 0/2 correct -> pooled 9/12, group mean 45
    y = np.ones(12, dtype=int)
    p = np.array([1] * 9 + [0] + [0, 0])
    g = np.array(["a"] * 10 + ["b"] * 2)
    assert accuracy(y, p, g) == pytest.approx(75.0)
    assert group_accuracies(y, p, g) == {"a": pytest.approx(90.0), "b": pytest.approx(0.0)}
    report = evaluate_predictions(y, p, g)
    assert report["accuracy"] == pytest.approx(75.0)
    # min group accuracy 0: the ratio is undefined, and says so
    assert math.isnan(report["max_min_ratio"])
    assert any("Max/Min" in m for m in report["undefined"])


# --------------------------------------------------------------------------------------
# a hand-computed binary example with an undefined TPR
# --------------------------------------------------------------------------------------
#   group a: y = 0 0   p = 1 0  -> no positives: TPR NaN, FPR 50
#   group b: y = 1 1   p = 1 0  -> TPR 50, no negatives: FPR NaN
#   group c: y = 0 1   p = 0 1  -> TPR 100, FPR 0
Y = np.array([0, 0, 1, 1, 0, 1])
P = np.array([1, 0, 1, 0, 0, 1])
G = np.array(["a", "a", "b", "b", "c", "c"])


def test_hand_computed_rates_and_undefined():
    r = evaluate_predictions(Y, P, G)
    assert math.isnan(r["group_tpr"]["a"]) and math.isnan(r["group_fpr"]["b"])
    assert r["group_tpr"]["b"] == 50.0 and r["group_tpr"]["c"] == 100.0
    assert r["group_fpr"]["a"] == 50.0 and r["group_fpr"]["c"] == 0.0
    assert r["group_support"] == {
        "a": {"n": 2, "pos": 0, "neg": 2},
        "b": {"n": 2, "pos": 2, "neg": 0},
        "c": {"n": 2, "pos": 1, "neg": 1},
    }
    assert r["tpr"] == pytest.approx(200 / 3) and r["fpr"] == pytest.approx(100 / 3)
    assert (r["max_group_tpr"], r["min_group_tpr"]) == (100.0, 50.0)
    assert r["deo"] == 50.0 and r["eo_difference"] == 50.0
    assert r["fpr_gap"] == 50.0
    assert r["deodds"] == 100.0  # sum of the two gaps
    assert r["deodds_max"] == 50.0 and r["eodds_difference"] == 50.0
    assert r["deodds_mean"] == 50.0
    assert r["dp_difference"] == 0.0  # every group selects 1 of 2
    assert any("'a'" in m and "TPR undefined" in m for m in r["undefined"])
    assert any("'b'" in m and "FPR undefined" in m for m in r["undefined"])
    assert r["excluded_groups"] == []
    # the plain functions agree with the report
    assert deo(Y, P, G) == r["deo"]
    assert deodds(Y, P, G) == r["deodds"]
    assert equal_opportunity_difference(Y, P, G) == r["eo_difference"]
    assert equalized_odds_difference(Y, P, G) == r["deodds_max"]
    assert equalized_odds_difference(Y, P, G, agg="mean") == r["deodds_mean"]
    assert equalized_odds_difference(Y, P, G, agg="sum") == r["deodds"]
    assert demographic_parity_difference(Y, P, G) == r["dp_difference"]
    assert worst_group_accuracy(Y, P, G) == r["worst_group_accuracy"] == 50.0
    rates = group_rates(Y, P, G)
    assert rates["c"] == {"n": 2, "pos": 1, "neg": 1, "tpr": 100.0, "fpr": 0.0, "selection_rate": 50.0}
    with pytest.raises(ValueError, match="agg"):
        equalized_odds_difference(Y, P, G, agg="median")


def test_positive_label_zero_swaps_roles():
    r1 = evaluate_predictions(Y, P, G, positive_label=1)
    r0 = evaluate_predictions(Y, P, G, positive_label=0)
    for g in "abc":  # TPR for class 0 = 100 - FPR for class 1 (true negative rate)
        a, b = r0["group_tpr"][g], r1["group_fpr"][g]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(100 - b)
    assert r0["positive_label"] == 0


def test_single_defined_group_gives_undefined_gap_not_zero():
    y = np.array([1, 1, 0, 0])
    p = np.array([1, 0, 0, 1])
    g = np.array(["a", "a", "b", "b"])  # only group a has positives
    r = evaluate_predictions(y, p, g)
    assert math.isnan(r["deo"]) and math.isnan(r["deodds"])
    assert any("DEO undefined" in m for m in r["undefined"])
    assert r["max_group_tpr"] == r["min_group_tpr"] == 50.0


def test_min_support_excludes_small_groups_from_aggregates_and_says_so():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.8, y, 1 - y)
    g = np.array(["big1"] * 140 + ["big2"] * 150 + ["tiny"] * 10)
    p[-10:] = 1 - y[-10:]  # the tiny group is always wrong
    full = evaluate_predictions(y, p, g)
    cut = evaluate_predictions(y, p, g, min_support=11)
    assert full["min_group_accuracy"] == 0.0 and full["excluded_groups"] == []
    assert cut["excluded_groups"] == ["tiny"] and cut["min_support"] == 11
    assert cut["group_accuracy"]["tiny"] == 0.0  # still reported with its support
    assert cut["group_support"]["tiny"]["n"] == 10
    big = g != "tiny"
    ref = evaluate_predictions(y[big], p[big], g[big])
    for key in ["max_group_accuracy", "min_group_accuracy", "max_min_ratio", "dob", "deo", "deodds",
                "dp_difference", "max_group_tpr", "min_group_tpr"]:
        assert cut[key] == pytest.approx(ref[key], abs=1e-12), key
    assert cut["accuracy"] == full["accuracy"]  # pooled accuracy keeps every sample
    assert deo(y, p, g, min_support=11) == pytest.approx(ref["deo"], abs=1e-12)
    assert degree_of_bias(y, p, g, min_support=11) == pytest.approx(ref["dob"], abs=1e-12)
    everything = evaluate_predictions(y, p, g, min_support=1000)
    assert math.isnan(everything["max_group_accuracy"])
    assert any("min_support" in m for m in everything["undefined"])


def test_report_is_json_serialisable_with_int_groups():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    g = rng.integers(0, 3, 50)
    r = evaluate_predictions(y, p, g, scores=rng.random(50))
    back = json.loads(json.dumps(r))
    assert set(back["group_accuracy"]) == {"0", "1", "2"}
    assert all(type(k) is int for k in r["group_accuracy"])
    for key in ["accuracy", "dob", "deo", "ece"]:
        assert type(r[key]) is float


def test_input_validation():
    with pytest.raises(ValueError, match="entries"):
        evaluate_predictions([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="groups"):
        evaluate_predictions([0, 1], [0, 1], ["a"])
    with pytest.raises(ValueError, match="integer class indices"):
        evaluate_predictions(["m", "f"], ["m", "f"], ["a", "b"])
    with pytest.raises(ValueError, match="1-D"):
        evaluate_predictions(np.zeros((2, 2), int), np.zeros((2, 2), int), ["a", "b"])
    with pytest.raises(ValueError, match="missing"):
        evaluate_predictions([0, 1], [0, 1], ["a", None])
    with pytest.raises(ValueError, match="probabilities"):
        evaluate_predictions([0, 1], [0, 1], ["a", "b"], scores=[[3.0, -2.0], [0.1, 0.9]])
    with pytest.raises(ValueError, match="class indices"):
        evaluate_predictions([0, 3], [0, 1], ["a", "b"], num_classes=2)
    with pytest.raises(ValueError, match="positive_label"):
        evaluate_predictions([0, 1], [0, 1], ["a", "b"], positive_label=2)


# --------------------------------------------------------------------------------------
# multiclass
# --------------------------------------------------------------------------------------
def test_multiclass_one_vs_rest_and_macro_mean():
    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 3, n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))
    g = rng.choice(["x", "y", "z"], n)
    r = evaluate_predictions(y, p, g)
    assert r["num_classes"] == 3 and r["rate_average"] == "macro" and r["positive_label"] is None
    assert r["accuracy"] == pytest.approx(100 * np.mean(y == p))
    assert set(r["per_class"]) == {0, 1, 2}
    for c in range(3):
        binary = evaluate_predictions((y == c).astype(int), (p == c).astype(int), g)
        for key in ["tpr", "fpr", "deo", "deodds", "deodds_max", "dp_difference", "max_group_tpr"]:
            assert r["per_class"][c][key] == pytest.approx(binary[key], abs=1e-12), (c, key)
        assert r["per_class"][c]["group_support"] == binary["group_support"]
    for key in ["tpr", "deo", "deodds", "dp_difference"]:
        assert r[key] == pytest.approx(np.mean([r["per_class"][c][key] for c in range(3)]))
    # macro TPR is the balanced accuracy
    recalls = [np.mean(p[y == c] == c) for c in range(3)]
    assert r["tpr"] == pytest.approx(100 * np.mean(recalls))
    for grp in "xyz":
        assert r["group_tpr"][grp] == pytest.approx(np.mean([r["per_class"][c]["group_tpr"][grp] for c in range(3)]))
    assert r["group_support"]["x"]["n"] == int(np.sum(g == "x"))
    assert sum(r["group_support"]["x"]["class_counts"].values()) == r["group_support"]["x"]["n"]
    # plain functions: positive_label=None is the macro mean, an int is one-vs-rest
    assert deo(y, p, g, positive_label=None) == pytest.approx(r["deo"])
    assert deo(y, p, g, positive_label=2) == pytest.approx(r["per_class"][2]["deo"])


def test_multiclass_absent_class_is_undefined_and_ignored_by_macro_mean():
    y = np.array([0, 1, 0, 1, 0, 1])
    p = np.array([0, 1, 1, 1, 0, 0])
    g = np.array(["a", "a", "a", "b", "b", "b"])
    r = evaluate_predictions(y, p, g, num_classes=3)  # class 2 never occurs
    assert math.isnan(r["per_class"][2]["deo"])
    assert any(m.startswith("class 2: ") and "TPR undefined" in m for m in r["undefined"])
    assert r["deo"] == pytest.approx(np.mean([r["per_class"][0]["deo"], r["per_class"][1]["deo"]]))


# --------------------------------------------------------------------------------------
# expected calibration error
# --------------------------------------------------------------------------------------
def _reference_ece(conf, correct, n_bins):
    """Guo et al. (2017): bins (lo, hi], sum over bins of |B|/n |acc(B) - conf(B)|."""
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        in_bin = (conf > lo) & (conf <= hi) if i > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return 100 * total


def test_ece_matches_reference_and_hand_values():
    rng = np.random.default_rng(5)
    n, k = 400, 3
    logits = rng.normal(size=(n, k)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    y = np.where(rng.random(n) < 0.6, pred, rng.integers(0, k, n))
    g = rng.choice(["a", "b"], n)
    conf = probs[np.arange(n), pred]
    for bins in (1, 10, 15):
        assert expected_calibration_error(y, pred, g, scores=probs, n_bins=bins) == pytest.approx(
            _reference_ece(conf, y == pred, bins), abs=1e-9
        )
    per_group = group_expected_calibration_errors(y, pred, g, scores=probs)
    for grp in "ab":
        m = g == grp
        assert per_group[grp] == pytest.approx(_reference_ece(conf[m], (y == pred)[m], 15), abs=1e-9)
    r = evaluate_predictions(y, pred, g, scores=probs)
    assert r["ece"] == pytest.approx(_reference_ece(conf, y == pred, 15), abs=1e-9)
    assert r["group_ece"] == pytest.approx(per_group)
    # hand values: confidence 0.8 everywhere and 80% right -> 0; 100% right -> 20
    y5, p5 = np.array([1, 1, 1, 1, 0]), np.ones(5, dtype=int)
    s5 = np.full(5, 0.8)  # binary 1-D scores = P(class 1)
    assert expected_calibration_error(y5, p5, scores=s5) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.ones(5, int), p5, scores=s5) == pytest.approx(20.0)


# --------------------------------------------------------------------------------------
# uncertainty
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "p, df, expected",  # standard t-table values
    [
        (0.975, 1, 12.706205),
        (0.975, 2, 4.302653),
        (0.975, 4, 2.776445),
        (0.975, 9, 2.262157),
        (0.975, 30, 2.042272),
        (0.95, 5, 2.015048),
        (0.995, 3, 5.840909),
        (0.9, 1, 3.077684),
    ],
)
def test_t_quantile_table_values(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-7)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=5e-7)


def test_t_quantile_against_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    for df in [1, 2, 3, 7, 19, 100, 1000]:
        for p in [0.6, 0.9, 0.975, 0.999]:
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-10)
    assert t_quantile(0.5, 4) == 0.0
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_mean_t_interval():
    mean, half, n = mean_t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), abs=1e-6)
    mean, half, n = mean_t_interval([1.0, float("nan"), 3.0, 5.0, 7.0], confidence=0.9)
    assert (mean, n) == (4.0, 4)
    assert half == pytest.approx(t_quantile(0.95, 3) * np.std([1, 3, 5, 7], ddof=1) / 2)
    mean, half, n = mean_t_interval([5.0])
    assert mean == 5.0 and math.isnan(half) and n == 1
    mean, half, n = mean_t_interval([float("nan")])
    assert math.isnan(mean) and math.isnan(half) and n == 0


def test_mean_over_attributes_is_per_attribute_then_nan_aware_mean():
    # attribute A: TPRs 80 / 40 (DEO 40); attribute B: TPRs 50 / 50 (DEO 0);
    # attribute C: no positives in one group, DEO undefined
    reports = [
        {"accuracy": 90.0, "max_group_tpr": 80.0, "min_group_tpr": 40.0, "deo": 40.0},
        {"accuracy": 80.0, "max_group_tpr": 50.0, "min_group_tpr": 50.0, "deo": 0.0},
        {"accuracy": 70.0, "max_group_tpr": 60.0, "min_group_tpr": 60.0, "deo": float("nan")},
    ]
    out = mean_over_attributes(reports)
    assert out["num_reports"] == 3
    assert out["accuracy"] == pytest.approx(80.0) and out["accuracy_undefined_count"] == 0
    assert out["deo"] == pytest.approx(20.0) and out["deo_undefined_count"] == 1
    # the mean DEO is not the gap of the mean TPRs
    assert out["max_group_tpr"] - out["min_group_tpr"] != pytest.approx(out["deo"])
    assert "tpr" not in out  # only keys some report has
    only = mean_over_attributes({"A": reports[0], "B": {"accuracy": 70.0}}, keys=["deo"])
    assert only == {"num_reports": 2, "deo": 40.0, "deo_undefined_count": 1}
    none = mean_over_attributes([{"deo": float("nan")}], keys=["deo"])
    assert math.isnan(none["deo"]) and none["deo_undefined_count"] == 1
    with pytest.raises(ValueError, match="group_tpr"):
        mean_over_attributes([{"group_tpr": {"a": 1.0}}], keys=["group_tpr"])


def test_mean_over_attributes_of_real_reports():
    rng = np.random.default_rng(7)
    reports = []
    for _ in range(4):
        y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
        reports.append(evaluate_predictions(y, p, rng.choice(["m", "f"], 200)))
    out = mean_over_attributes(reports)
    for key in ["accuracy", "deo", "deodds", "min_group_accuracy", "dob"]:
        assert out[key] == pytest.approx(np.mean([r[key] for r in reports]))
        assert out[f"{key}_undefined_count"] == 0


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    rng = np.random.default_rng(11)
    n = 400
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.85, y, 1 - y)
    g = rng.choice(["a", "b"], n)
    ci = bootstrap_ci(accuracy, y, p, g, n_resamples=300, seed=4)
    assert isinstance(ci, BootstrapInterval)
    low, high = ci
    assert ci == bootstrap_ci(accuracy, y, p, g, n_resamples=300, seed=4)
    assert ci != bootstrap_ci(accuracy, y, p, g, n_resamples=300, seed=5)
    assert low < accuracy(y, p) < high
    assert (ci.n_valid, ci.n_dropped) == (300, 0)
    wider = bootstrap_ci(accuracy, y, p, g, n_resamples=300, seed=4, confidence=0.99)
    assert wider[0] <= low and wider[1] >= high
    # keyword arguments reach the metric
    d0 = bootstrap_ci(degree_of_bias, y, p, g, n_resamples=50, seed=0, ddof=0)
    d1 = bootstrap_ci(degree_of_bias, y, p, g, n_resamples=50, seed=0, ddof=1)
    assert d1[1] > d0[1]


def test_bootstrap_drops_and_counts_nan_resamples():
    # group b has a single positive: resamples that miss it leave a single defined TPR
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0, 0, 0])
    p = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 1])
    g = np.array(["a"] * 6 + ["b"] * 4)
    ci = bootstrap_ci(deo, y, p, g, n_resamples=200, seed=0)
    assert ci.n_dropped > 0 and ci.n_valid + ci.n_dropped == 200
    assert 0.0 <= ci[0] <= ci[1] <= 100.0
    never = bootstrap_ci(deo, np.zeros(6, int), np.zeros(6, int), ["a"] * 3 + ["b"] * 3, n_resamples=20)
    assert math.isnan(never[0]) and never.n_valid == 0
    with pytest.raises(TypeError, match="number"):
        bootstrap_ci(group_accuracies, y, p, g, n_resamples=2)


def test_bootstrap_passes_resampled_scores():
    rng = np.random.default_rng(2)
    n = 300
    probs = rng.random(n)
    pred = (probs > 0.5).astype(int)
    y = (rng.random(n) < probs).astype(int)  # calibrated by construction
    ci = bootstrap_ci(expected_calibration_error, y, pred, None, scores=probs, n_resamples=200)
    assert ci[0] <= expected_calibration_error(y, pred, scores=probs) <= ci[1]


def test_bootstrap_coverage_sanity():
    """Percentile intervals of accuracy cover the true accuracy about 95% of the time."""
    true_p, n, trials = 0.8, 200, 400
    rng = np.random.default_rng(123)
    covered = 0
    for t in range(trials):
        y = np.ones(n, dtype=int)
        p = (rng.random(n) < true_p).astype(int)
        low, high = bootstrap_ci(accuracy, y, p, None, n_resamples=200, seed=t)
        covered += low <= 100 * true_p <= high
    # binomial sd of the coverage estimate, plus the percentile bootstrap's known slight
    # under-coverage at small n
    sd = math.sqrt(0.95 * 0.05 / trials)
    assert abs(covered / trials - 0.95) < 4 * sd + 0.02


# --------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------
def test_metrics_are_registered_with_one_line_summaries():
    from fairbench import registry

    names = {
        "accuracy", "group_accuracy", "max_min_ratio", "dob", "deo", "deodds",
        "worst_group_accuracy", "dp_difference", "eo_difference", "eodds_difference", "ece",
    }
    assert names <= set(registry.metrics.names())
    assert registry.metrics.get("dob").compute is degree_of_bias
    assert registry.metrics.get("eodds_difference").compute is equalized_odds_difference
    for name in names:
        summary = registry.summary_of(registry.metrics.get(name))
        assert summary and "\n" not in summary


# -- intervals within range, paired differences over seeds ---------------------------------------
def test_clipped_interval_never_leaves_the_metric_range():
    from fairbench.metrics.uncertainty import clipped_t_interval, mean_t_interval

    values = [99.9, 100.0, 97.0]
    mean, low, high, n = clipped_t_interval(values)
    m, half, _ = mean_t_interval(values)
    assert n == 3 and mean == m and high == 100.0 and low == pytest.approx(m - half)
    assert clipped_t_interval([1.0, 50.0])[2] <= 100.0 and clipped_t_interval([1.0, 50.0])[1] == 0.0


def test_paired_difference_uses_common_seeds_and_removes_shared_variance():
    from fairbench.metrics.uncertainty import mean_t_interval, paired_difference

    baseline = {0: 60.0, 1: 80.0, 2: 70.0, 3: 90.0, 4: 65.0, 9: 50.0}
    method = {s: v + 2.0 + (0.1 if s % 2 else -0.1) for s, v in baseline.items() if s != 9}
    method[7] = 99.0  # no baseline for seed 7: ignored
    diff = paired_difference(method, baseline)
    assert diff.seeds == [0, 1, 2, 3, 4] and diff.n == 5 and not diff.rough
    assert diff.mean == pytest.approx(2.0 + 0.1 * (2 - 3) / 5)
    assert diff.excludes_zero and diff.low > 1.5
    # unpaired, the seed-to-seed spread (60-90) would swamp the +2
    _, half_unpaired, _ = mean_t_interval([method[s] for s in diff.seeds])
    assert half_unpaired > 5 * (diff.high - diff.mean)
    assert "paired, n=5" in diff.describe()


def test_paired_difference_with_few_seeds_is_called_rough():
    from fairbench.metrics.uncertainty import paired_difference

    diff = paired_difference({0: 1.0, 1: 3.0}, {0: 0.0, 1: 0.0})
    assert diff.rough and "rough: fewer than 5 seeds" in diff.describe()
    assert not diff.excludes_zero  # [-10.7, 14.7]
    assert paired_difference({0: 1.0}, {1: 1.0}).describe() == "no common seeds"
    assert paired_difference({0: 2.0}, {0: 1.0}).describe() == "+1.00 pp (n=1: no interval)"


# -- worst (class, group) cell, Holm, p-values, intervals with test-sample noise ---------------------
def test_worst_cell_accuracy_is_the_lowest_per_group_recall():
    from fairbench.metrics import worst_cell_accuracy

    # cells (true class, group): (0,a) 1 of 2 right, (1,a) 2 of 2, (0,b) 3 of 4, (1,b) 1 of 3
    y = np.array([0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0])
    g = np.array(["a"] * 4 + ["b"] * 7)
    assert worst_cell_accuracy(y, p, g) == pytest.approx(100.0 / 3)
    report = evaluate_predictions(y, p, g)
    assert report["worst_cell_accuracy"] == pytest.approx(100.0 / 3)
    assert report["worst_group_accuracy"] == pytest.approx(400.0 / 7)  # b: 4 of 7, blind to the (1,b) cell
    assert worst_cell_accuracy(y, p, g, min_support=4) == 75.0  # only (0,b) has 4 samples


def test_holm_adjusted_p_values_on_a_hand_computed_example():
    from fairbench.metrics.uncertainty import holm_adjusted

    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    adjusted = holm_adjusted([0.01, 0.04, 0.03, float("nan"), 0.005])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and adjusted[4] == pytest.approx(0.02)
    assert math.isnan(adjusted[3])
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]


def test_two_sided_t_p_value():
    from fairbench.metrics.uncertainty import two_sided_t_p_value

    # t_{0.975, 4} = 2.7764451: p = 0.05; df = 1 (Cauchy): P(|T| >= 1) = 0.5
    assert two_sided_t_p_value(2.7764451, 4) == pytest.approx(0.05, abs=1e-6)
    assert two_sided_t_p_value(-1.0, 1) == pytest.approx(0.5)
    assert two_sided_t_p_value(0.0, 3) == pytest.approx(1.0)


def test_paired_difference_p_value_agrees_with_its_interval_and_adds_sample_variance():
    from fairbench.metrics.uncertainty import paired_difference, t_quantile

    method, baseline = {0: 3.0, 1: 5.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 2.5}
    plain = paired_difference(method, baseline, span=None)
    noisy = paired_difference(method, baseline, span=None, sample_variance=0.5)
    diffs = [2.0, 3.0, 1.5]
    s2 = float(np.var(diffs, ddof=1))
    assert noisy.high - noisy.mean == pytest.approx(t_quantile(0.975, 2) * math.sqrt(s2 / 3 + 0.5))
    assert noisy.p_value > plain.p_value
    for d in (plain, noisy):
        assert (d.p_value <= 0.05) == d.excludes_zero
