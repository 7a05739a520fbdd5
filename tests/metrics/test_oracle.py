"""fairlearn as the oracle: agreement to 1e-9 wherever the definitions agree (every group
has positives and negatives), and the deliberate differences tested explicitly.

Our rates are percentages: they are divided by 100 before comparing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

from fairbench.metrics import (  # noqa: E402
    deo,
    deodds,
    equalized_odds_difference,
    evaluate_predictions,
)

MetricFrame = fairlearn_metrics.MetricFrame
TOL = 1e-9
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,  # write no .hypothesis folder into the tree
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def grouped_predictions(draw, classes=2, min_groups=2, max_groups=5, every_class_per_group=True):
    """(y_true, y_pred, groups): random rows, plus (if asked) one row of every true class in
    every group, so that every group's rates are defined."""
    num_groups = draw(st.integers(min_groups, max_groups))
    names = draw(
        st.sampled_from([[f"g{i}" for i in range(num_groups)], list(range(num_groups))])
    )
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(0, num_groups - 1),
                st.integers(0, classes - 1),
                st.integers(0, classes - 1),
            ),
            max_size=150,
        )
    )
    if every_class_per_group:
        for g in range(num_groups):
            for c in range(classes):
                rows.append((g, c, draw(st.integers(0, classes - 1))))
    else:
        rows += [(g, 0, 0) for g in range(num_groups) if all(r[0] != g for r in rows)]
    rows = draw(st.permutations(rows))
    groups = np.array([names[r[0]] for r in rows])
    return np.array([r[1] for r in rows]), np.array([r[2] for r in rows]), groups


def _frame(metric, y, p, g):
    return MetricFrame(metrics=metric, y_true=y, y_pred=p, sensitive_features=g)


@SETTINGS
@given(grouped_predictions())
def test_binary_report_agrees_with_fairlearn(data):
    y, p, g = data
    r = evaluate_predictions(y, p, g)
    mf = _frame(
        {
            "acc": sklearn_metrics.accuracy_score,
            "tpr": fairlearn_metrics.true_positive_rate,
            "fpr": fairlearn_metrics.false_positive_rate,
            "sel": fairlearn_metrics.selection_rate,
        },
        y, p, g,
    )
    by_group, overall = mf.by_group, mf.overall
    group_max, group_min, ratio = mf.group_max(), mf.group_min(), mf.ratio()

    assert r["accuracy"] / 100 == pytest.approx(overall["acc"], abs=TOL)
    for grp, row in by_group.iterrows():
        assert r["group_accuracy"][grp] / 100 == pytest.approx(row["acc"], abs=TOL)
        assert r["group_tpr"][grp] / 100 == pytest.approx(row["tpr"], abs=TOL)
        assert r["group_fpr"][grp] / 100 == pytest.approx(row["fpr"], abs=TOL)
        assert r["group_selection_rate"][grp] / 100 == pytest.approx(row["sel"], abs=TOL)
    assert r["tpr"] / 100 == pytest.approx(overall["tpr"], abs=TOL)
    assert r["fpr"] / 100 == pytest.approx(overall["fpr"], abs=TOL)
    assert r["max_group_accuracy"] / 100 == pytest.approx(group_max["acc"], abs=TOL)
    assert r["min_group_accuracy"] / 100 == pytest.approx(group_min["acc"], abs=TOL)
    assert r["max_group_tpr"] / 100 == pytest.approx(group_max["tpr"], abs=TOL)
    assert r["min_group_tpr"] / 100 == pytest.approx(group_min["tpr"], abs=TOL)
    assert r["max_group_fpr"] / 100 == pytest.approx(group_max["fpr"], abs=TOL)
    assert r["dob"] / 100 == pytest.approx(float(np.std(by_group["acc"].to_numpy(), ddof=0)), abs=TOL)
    if group_min["acc"] > 0:  # fairlearn's ratio is min / max
        assert r["max_min_ratio"] == pytest.approx(1 / ratio["acc"], rel=TOL)

    kw = {"sensitive_features": g}
    dp = fairlearn_metrics.demographic_parity_difference(y, p, **kw)
    eo = fairlearn_metrics.equal_opportunity_difference(y, p, **kw)
    eodds_max = fairlearn_metrics.equalized_odds_difference(y, p, agg="worst_case", **kw)
    eodds_mean = fairlearn_metrics.equalized_odds_difference(y, p, agg="mean", **kw)
    assert r["dp_difference"] / 100 == pytest.approx(dp, abs=TOL)
    assert r["eo_difference"] / 100 == pytest.approx(eo, abs=TOL)
    assert r["deo"] / 100 == pytest.approx(eo, abs=TOL)
    assert r["eodds_difference"] / 100 == pytest.approx(eodds_max, abs=TOL)
    assert r["deodds_max"] / 100 == pytest.approx(eodds_max, abs=TOL)
    assert r["deodds_mean"] / 100 == pytest.approx(eodds_mean, abs=TOL)
    # DEOdds is the SUM of the two gaps: twice fairlearn's mean
    assert r["deodds"] / 100 == pytest.approx(2 * eodds_mean, abs=TOL)
    # every rate is defined here (only a zero minimum accuracy may leave Max/Min undefined)
    assert [m for m in r["undefined"] if "Max/Min" not in m] == []
    assert r["excluded_groups"] == []


@SETTINGS
@given(grouped_predictions(min_groups=2, max_groups=2))
def test_deodds_is_twice_fairlearn_mean_for_two_groups(data):
    y, p, g = data
    mean = fairlearn_metrics.equalized_odds_difference(y, p, sensitive_features=g, agg="mean")
    assert deodds(y, p, g) / 100 == pytest.approx(2 * mean, abs=TOL)
    # two groups: DEO is |TPR_a - TPR_b|
    tpr = _frame(fairlearn_metrics.true_positive_rate, y, p, g).by_group.to_numpy()
    assert deo(y, p, g) / 100 == pytest.approx(abs(tpr[0] - tpr[1]), abs=TOL)


@SETTINGS
@given(grouped_predictions(classes=3, max_groups=4))
def test_multiclass_one_vs_rest_agrees_with_fairlearn_per_class(data):
    y, p, g = data
    r = evaluate_predictions(y, p, g, num_classes=3)
    per_class_eo, per_class_dp = [], []
    for c in range(3):
        yc, pc = (y == c).astype(int), (p == c).astype(int)
        # one frame per class; its between-group differences are what fairlearn's
        # equal_opportunity / demographic_parity / equalized_odds differences compute
        diff = _frame(
            {
                "tpr": fairlearn_metrics.true_positive_rate,
                "fpr": fairlearn_metrics.false_positive_rate,
                "sel": fairlearn_metrics.selection_rate,
            },
            yc, pc, g,
        ).difference()
        eo, dp = diff["tpr"], diff["sel"]
        assert r["per_class"][c]["deo"] / 100 == pytest.approx(eo, abs=TOL)
        assert r["per_class"][c]["dp_difference"] / 100 == pytest.approx(dp, abs=TOL)
        assert r["per_class"][c]["deodds"] / 100 == pytest.approx(diff["tpr"] + diff["fpr"], abs=TOL)
        assert r["per_class"][c]["deodds_max"] / 100 == pytest.approx(max(diff["tpr"], diff["fpr"]), abs=TOL)
        per_class_eo.append(eo)
        per_class_dp.append(dp)
    assert r["deo"] / 100 == pytest.approx(np.mean(per_class_eo), abs=TOL)
    assert r["dp_difference"] / 100 == pytest.approx(np.mean(per_class_dp), abs=TOL)
    assert r["tpr"] / 100 == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, p), abs=TOL)
    assert r["accuracy"] / 100 == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=TOL)


# --------------------------------------------------------------------------------------
# where we deliberately differ from fairlearn
# --------------------------------------------------------------------------------------
def test_group_without_positives_is_nan_not_zero():
    # group "none" has no positives: fairlearn gives it TPR 0, we NaN, and DEO ignores it
    y = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0])
    g = np.array(["a"] * 4 + ["b"] * 4 + ["none"] * 3)
    fl_tpr = _frame(fairlearn_metrics.true_positive_rate, y, p, g).by_group
    assert fl_tpr["none"] == 0.0
    r = evaluate_predictions(y, p, g)
    assert math.isnan(r["group_tpr"]["none"])
    assert any("'none'" in m and "no positives" in m and "TPR undefined" in m for m in r["undefined"])
    # ours: gap over the groups with a defined TPR (a: 50, b: 66.7)
    assert r["deo"] / 100 == pytest.approx(fl_tpr["b"] - fl_tpr["a"], abs=TOL)
    fl_eo = fairlearn_metrics.equal_opportunity_difference(y, p, sensitive_features=g)
    assert fl_eo == pytest.approx(fl_tpr.max() - 0.0)  # fairlearn counts the 0
    assert r["eo_difference"] / 100 != pytest.approx(fl_eo)
    # equal to fairlearn on the groups that do have positives
    has_pos = g != "none"
    assert r["deo"] / 100 == pytest.approx(
        fairlearn_metrics.equal_opportunity_difference(y[has_pos], p[has_pos], sensitive_features=g[has_pos]),
        abs=TOL,
    )


@SETTINGS
@given(grouped_predictions(every_class_per_group=False, max_groups=5))
def test_undefined_rates_equal_fairlearn_on_the_defined_groups(data):
    """With arbitrary groups (some without positives or negatives), every gap equals
    fairlearn's on the groups where the rate is defined, or is NaN and explained."""
    y, p, g = data
    r = evaluate_predictions(y, p, g)
    labels = list(r["group_accuracy"])
    with_pos = [x for x in labels if r["group_support"][x]["pos"] > 0]
    with_neg = [x for x in labels if r["group_support"][x]["neg"] > 0]
    for x in labels:
        assert math.isnan(r["group_tpr"][x]) == (x not in with_pos)
        assert math.isnan(r["group_fpr"][x]) == (x not in with_neg)
    assert len(r["undefined"]) >= (len(labels) - len(with_pos)) + (len(labels) - len(with_neg))
    if len(with_pos) >= 2:
        keep = np.isin(g, with_pos)
        eo = fairlearn_metrics.equal_opportunity_difference(y[keep], p[keep], sensitive_features=g[keep])
        assert r["deo"] / 100 == pytest.approx(eo, abs=TOL)
    else:
        assert math.isnan(r["deo"]) and math.isnan(r["deodds"])
        assert any("DEO undefined" in m for m in r["undefined"])
    # selection rates are always defined: DP difference is fairlearn's on all groups
    dp = fairlearn_metrics.demographic_parity_difference(y, p, sensitive_features=g)
    assert r["dp_difference"] / 100 == pytest.approx(dp, abs=TOL)


@SETTINGS
@given(grouped_predictions(), st.integers(0, 40))
def test_min_support_equals_fairlearn_on_the_supported_groups(data, min_support):
    y, p, g = data
    r = evaluate_predictions(y, p, g, min_support=min_support)
    names, counts = np.unique(g, return_counts=True)
    small = {n.item() for n, c in zip(names, counts) if c < min_support}
    assert set(r["excluded_groups"]) == small
    assert set(r["group_accuracy"]) == {n.item() for n in names}  # all still reported
    keep = ~np.isin(g, list(small))
    if len(set(g[keep].tolist())) >= 2:
        kw = {"sensitive_features": g[keep]}
        y2, p2 = y[keep], p[keep]
        acc = _frame(sklearn_metrics.accuracy_score, y2, p2, g[keep])
        assert r["min_group_accuracy"] / 100 == pytest.approx(acc.group_min(), abs=TOL)
        assert r["max_group_accuracy"] / 100 == pytest.approx(acc.group_max(), abs=TOL)
        assert r["deo"] / 100 == pytest.approx(
            fairlearn_metrics.equal_opportunity_difference(y2, p2, **kw), abs=TOL
        )
        assert r["deodds_max"] / 100 == pytest.approx(
            fairlearn_metrics.equalized_odds_difference(y2, p2, **kw), abs=TOL
        )
        assert r["dp_difference"] / 100 == pytest.approx(
            fairlearn_metrics.demographic_parity_difference(y2, p2, **kw), abs=TOL
        )
    else:
        assert math.isnan(r["deo"]) and math.isnan(r["dob"])
    assert r["accuracy"] / 100 == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=TOL)


@SETTINGS
@given(grouped_predictions(), st.randoms(use_true_random=False))
def test_metrics_invariant_to_sample_order(data, random):
    y, p, g = data
    order = list(range(len(y)))
    random.shuffle(order)
    a = evaluate_predictions(y, p, g)
    b = evaluate_predictions(y[order], p[order], g[order])
    for key in ["accuracy", "dob", "max_min_ratio", "deo", "deodds", "dp_difference"]:
        assert a[key] == pytest.approx(b[key], abs=1e-12, nan_ok=True)
    assert equalized_odds_difference(y, p, g, agg="sum") == pytest.approx(a["deo"] + a["fpr_gap"])
