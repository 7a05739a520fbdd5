"""Group-disaggregated fairness metrics over stored per-sample predictions.

Everything here is a plain numpy function of ``(y_true, y_pred, groups)``, so any table can be
recomputed from stored predictions without retraining. Accuracies and rates are in percent; a
rate with a zero denominator is NaN and reported as undefined, never 0 (fairlearn reports 0: we
differ on purpose); DEOdds is the SUM of the TPR and FPR gaps (``deodds_max`` / ``deodds_mean``
are fairlearn's variants); ``min_support`` leaves small groups out of across-group aggregates.
Definitions and conventions: docs/specs-notes.md#metrics
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fairbench.metrics.specs import declare, metric, metric_specs

__all__ = [
    "accuracy",
    "group_accuracies",
    "max_min_ratio",
    "max_min_ratio_from_group_accuracies",
    "degree_of_bias",
    "dob_from_group_accuracies",
    "group_rates",
    "deo",
    "deodds",
    "worst_group_accuracy",
    "worst_cell_accuracy",
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "expected_calibration_error",
    "group_expected_calibration_errors",
    "evaluate_predictions",
]

NAN = float("nan")

# ----------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------
def _as_class_indices(y: Any, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64, copy=False)
    if a.dtype == object or np.issubdtype(a.dtype, np.floating):
        try:
            f = a.astype(np.float64)
        except (TypeError, ValueError):
            f = None
        if f is not None and np.all(np.isfinite(f)) and np.all(f == np.round(f)):
            return f.astype(np.int64)
    raise ValueError(
        f"{name} must hold integer class indices (got dtype {a.dtype}); map string labels "
        "to indices first, e.g. with fairbench.metrics.score_frame"
    )


def _py(x: Any) -> Any:
    """numpy scalar -> python scalar (JSON-serialisable dict keys and values)."""
    return x.item() if isinstance(x, np.generic) else x


def _encode_groups(groups: Any, n: int) -> tuple[list[Any], np.ndarray]:
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be a 1-D array of group labels, got shape {g.shape}")
    if len(g) != n:
        raise ValueError(f"groups has {len(g)} entries but y_true has {n}")
    if g.dtype == object or np.issubdtype(g.dtype, np.floating):
        missing = int(pd.isna(g).sum())
        if missing:
            raise ValueError(f"groups has {missing} missing (None/NaN) labels")
    try:
        labels, codes = _sorted_factorize(g)
    except TypeError:  # mixed, unorderable python objects
        labels, codes = _sorted_factorize(g.astype(str))
    return [_py(x) for x in labels], codes


def _sorted_factorize(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique labels and each sample's index into them."""
    if g.dtype == object:  # hashing beats np.unique's object sort by ~10x
        codes, labels = pd.factorize(g, sort=True)
        return np.asarray(labels), codes.astype(np.int64)
    labels, codes = np.unique(g, return_inverse=True)
    return labels, codes.reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class _Data:
    y_true: np.ndarray
    y_pred: np.ndarray
    codes: np.ndarray  # group index per sample
    labels: list[Any]  # group label per group index (sorted)
    n_g: np.ndarray  # samples per group

    @property
    def num_groups(self) -> int:
        return len(self.labels)

    def count(self, mask: np.ndarray) -> np.ndarray:
        """Per-group number of samples where ``mask`` holds."""
        return np.bincount(self.codes[mask], minlength=self.num_groups)


def _prepare(y_true: Any, y_pred: Any, groups: Any) -> _Data:
    yt = _as_class_indices(y_true, "y_true")
    yp = _as_class_indices(y_pred, "y_pred")
    if len(yt) != len(yp):
        raise ValueError(f"y_true has {len(yt)} entries but y_pred has {len(yp)}")
    if len(yt) == 0:
        raise ValueError("no samples: y_true is empty")
    if groups is None:
        labels, codes = ["all"], np.zeros(len(yt), dtype=np.int64)
    else:
        labels, codes = _encode_groups(groups, len(yt))
    n_g = np.bincount(codes, minlength=len(labels))
    return _Data(yt, yp, codes, labels, n_g)


def _included(d: _Data, min_support: int) -> np.ndarray:
    if min_support < 0:
        raise ValueError(f"min_support must be >= 0, got {min_support}")
    return d.n_g >= min_support


# ----------------------------------------------------------------------------------
# small numeric helpers (NaN-aware, warning-free)
# ----------------------------------------------------------------------------------
def _pct(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    ok = den > 0
    np.divide(num, den, out=out, where=ok)
    return out * 100.0


def _defined(values: np.ndarray, included: np.ndarray) -> np.ndarray:
    return values[included & np.isfinite(values)]


def _max(values: np.ndarray, included: np.ndarray) -> float:
    v = _defined(values, included)
    return float(v.max()) if v.size else NAN


def _min(values: np.ndarray, included: np.ndarray) -> float:
    v = _defined(values, included)
    return float(v.min()) if v.size else NAN


def _gap(values: np.ndarray, included: np.ndarray) -> float:
    """max - min over included groups with a defined value; NaN with fewer than two."""
    v = _defined(values, included)
    return float(v.max() - v.min()) if v.size >= 2 else NAN


def _nanmean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else NAN


def _group_dict(labels: list[Any], values: np.ndarray) -> dict[Any, float]:
    return {g: float(v) for g, v in zip(labels, values)}


# ----------------------------------------------------------------------------------
# accuracy-based metrics
# ----------------------------------------------------------------------------------
def _group_accuracy_array(d: _Data) -> np.ndarray:
    return _pct(d.count(d.y_true == d.y_pred), d.n_g)


def _ratio_from_accs(accs: np.ndarray) -> float:
    accs = np.asarray(accs, dtype=np.float64)
    accs = accs[np.isfinite(accs)]
    if accs.size < 2 or accs.min() <= 0:
        return NAN
    return float(accs.max() / accs.min())


def _dob_from_accs(accs: np.ndarray, ddof: int) -> float:
    accs = np.asarray(accs, dtype=np.float64)
    accs = accs[np.isfinite(accs)]
    if accs.size < 2 or accs.size - ddof <= 0:
        return NAN
    return float(np.std(accs, ddof=ddof))


def _values_of(group_accuracies: Mapping[Any, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    if isinstance(group_accuracies, Mapping):
        return np.asarray(list(group_accuracies.values()), dtype=np.float64)
    return np.asarray(group_accuracies, dtype=np.float64).reshape(-1)


@metric("accuracy", title="Accuracy", unit="%", better="higher", reported=True, of="accuracy", history=True,
        titles={"groups": "Overall", "methods": "Overall", "summary": "Acc"})
def accuracy(y_true: Any, y_pred: Any, groups: Any = None) -> float:
    """Pooled accuracy over all samples, in % (groups are ignored)."""
    d = _prepare(y_true, y_pred, None)
    if groups is not None and len(groups) != len(d.y_true):
        raise ValueError(f"groups has {len(groups)} entries but y_true has {len(d.y_true)}")
    return float(np.mean(d.y_true == d.y_pred) * 100.0)


@metric("group_accuracy", title="Group accuracy", unit="%", better="higher", per_group=True, reported=True,
        of="accuracy", variant="per_group")
def group_accuracies(y_true: Any, y_pred: Any, groups: Any) -> dict[Any, float]:
    """Accuracy of every group, in %, as {group: accuracy}."""
    d = _prepare(y_true, y_pred, groups)
    return _group_dict(d.labels, _group_accuracy_array(d))


def max_min_ratio_from_group_accuracies(
    group_accuracies: Mapping[Any, float] | Sequence[float] | np.ndarray,
) -> float:
    """Max/Min ratio of given group accuracies (NaN with < 2 groups or a zero minimum)."""
    return _ratio_from_accs(_values_of(group_accuracies))


def dob_from_group_accuracies(
    group_accuracies: Mapping[Any, float] | Sequence[float] | np.ndarray, *, ddof: int = 0
) -> float:
    """Degree of Bias of given group accuracies: their standard deviation (ddof 0 default)."""
    return _dob_from_accs(_values_of(group_accuracies), ddof)


@metric("worst_group_accuracy", title="Worst-group accuracy", unit="%", better="higher", reported=True,
        of="accuracy", variant="min", history=True, titles={"summary": "Worst grp"})
def worst_group_accuracy(y_true: Any, y_pred: Any, groups: Any, *, min_support: int = 0) -> float:
    """Worst-group accuracy: the minimum group accuracy, in %."""
    d = _prepare(y_true, y_pred, groups)
    return _min(_group_accuracy_array(d), _included(d, min_support))


@metric("dob", title="DoB", unit="pp", better="lower", reported=True, of="accuracy", variant="std", history=True,
        titles={"run": "DoB (std, pp)"}, undefined=lambda r: _why_dispersion_undefined(r, "too few groups for ddof"))
def degree_of_bias(
    y_true: Any, y_pred: Any, groups: Any, *, ddof: int = 0, min_support: int = 0
) -> float:
    """Degree of Bias: std of group accuracies in percentage points (ddof 0 default)."""
    d = _prepare(y_true, y_pred, groups)
    accs = _group_accuracy_array(d)[_included(d, min_support)]
    return _dob_from_accs(accs, ddof)


@metric("max_min_ratio", title="Max/Min", unit="ratio", better="lower", digits=3, reported=True, of="accuracy",
        variant="ratio", history=True, titles={"run": "Max/Min ratio"},
        undefined=lambda r: _why_dispersion_undefined(r, "min group accuracy 0"))
def max_min_ratio(y_true: Any, y_pred: Any, groups: Any, *, min_support: int = 0) -> float:
    """Max/Min ratio of group accuracies (>= 1, closer to 1 is fairer)."""
    d = _prepare(y_true, y_pred, groups)
    accs = _group_accuracy_array(d)[_included(d, min_support)]
    return _ratio_from_accs(accs)


def _worst_cell(d: _Data, min_support: int) -> float:
    """The minimum accuracy over (true class, group) cells with at least ``min_support`` samples
    (and at least one): per-group recall of each class."""
    cells = d.y_true * d.num_groups + d.codes
    size = (int(d.y_true.max()) + 1) * d.num_groups
    support = np.bincount(cells, minlength=size)
    accs = _pct(np.bincount(cells[d.y_true == d.y_pred], minlength=size), support)
    return _min(accs, support >= max(min_support, 1))


@metric("worst_cell_accuracy", title="Worst-cell accuracy", unit="%", better="higher", reported=True,
        of="cell accuracy", variant="min")
def worst_cell_accuracy(y_true: Any, y_pred: Any, groups: Any, *, min_support: int = 0) -> float:
    """Worst (class, group) cell accuracy, in %: the lowest recall of any class within any group
    (Sagawa et al.'s worst-group accuracy, groups = target x protected cells)."""
    return _worst_cell(_prepare(y_true, y_pred, groups), min_support)


# ----------------------------------------------------------------------------------
# rate-based metrics (binary, or one-vs-rest for one class)
# ----------------------------------------------------------------------------------
def _rate_block(
    d: _Data, positive: int, included: np.ndarray, context: str = ""
) -> tuple[dict[str, Any], dict[Any, dict[str, int]], list[str]]:
    """TPR / FPR / selection rates of ``positive`` vs rest, per group and aggregated.

    Returns (block, support, undefined messages).
    """
    t = d.y_true == positive
    p = d.y_pred == positive
    pos = d.count(t)
    neg = d.n_g - pos
    tp = d.count(t & p)
    fp = d.count(~t & p)
    sel = d.count(p)

    tpr_g = _pct(tp, pos)
    fpr_g = _pct(fp, neg)
    sr_g = _pct(sel, d.n_g)

    undefined: list[str] = []
    label = f"y={positive}"
    for g, n_pos, n_neg in zip(d.labels, pos, neg):
        if n_pos == 0:
            undefined.append(f"{context}group {g!r} has no positives ({label}): TPR undefined")
        if n_neg == 0:
            undefined.append(f"{context}group {g!r} has no negatives (y!={positive}): FPR undefined")
    tpr = float(_pct(tp.sum(), pos.sum()))
    fpr = float(_pct(fp.sum(), neg.sum()))
    if pos.sum() == 0:
        undefined.append(f"{context}no positives ({label}) in any group: pooled TPR undefined")
    if neg.sum() == 0:
        undefined.append(f"{context}no negatives (y!={positive}) in any group: pooled FPR undefined")

    deo_ = _gap(tpr_g, included)
    fpr_gap = _gap(fpr_g, included)
    dp = _gap(sr_g, included)
    where = "included groups (min_support)" if not included.all() else "groups"
    if math.isnan(deo_):
        undefined.append(f"{context}fewer than 2 {where} with a defined TPR: DEO undefined")
    if math.isnan(fpr_gap):
        undefined.append(f"{context}fewer than 2 {where} with a defined FPR: FPR gap undefined")
    if math.isnan(dp):
        undefined.append(f"{context}fewer than 2 {where}: demographic parity difference undefined")
    if math.isnan(deo_) or math.isnan(fpr_gap):
        deodds_sum = deodds_max = deodds_mean = NAN
    else:
        deodds_sum = deo_ + fpr_gap
        deodds_max = max(deo_, fpr_gap)
        deodds_mean = (deo_ + fpr_gap) / 2.0

    block: dict[str, Any] = {
        "tpr": tpr,
        "fpr": fpr,
        "selection_rate": float(_pct(sel.sum(), d.n_g.sum())),
        "group_tpr": _group_dict(d.labels, tpr_g),
        "group_fpr": _group_dict(d.labels, fpr_g),
        "group_selection_rate": _group_dict(d.labels, sr_g),
        "max_group_tpr": _max(tpr_g, included),
        "min_group_tpr": _min(tpr_g, included),
        "max_group_fpr": _max(fpr_g, included),
        "min_group_fpr": _min(fpr_g, included),
        "deo": deo_,
        "fpr_gap": fpr_gap,
        "deodds": deodds_sum,
        "deodds_max": deodds_max,
        "deodds_mean": deodds_mean,
        "dp_difference": dp,
        "eo_difference": deo_,
        "eodds_difference": deodds_max,
    }
    support = {
        g: {"n": int(n), "pos": int(a), "neg": int(b)}
        for g, n, a, b in zip(d.labels, d.n_g, pos, neg)
    }
    return block, support, undefined


def _classes_of(d: _Data) -> list[int]:
    return sorted(set(np.unique(d.y_true).tolist()) | set(np.unique(d.y_pred).tolist()))


def _rate_scalar(
    y_true: Any, y_pred: Any, groups: Any, key: str, positive_label: int | None, min_support: int
) -> float:
    """One scalar of the rate block; ``positive_label=None``: macro mean one-vs-rest."""
    d = _prepare(y_true, y_pred, groups)
    included = _included(d, min_support)
    positives = _classes_of(d) if positive_label is None else [positive_label]
    values = [_rate_block(d, c, included)[0][key] for c in positives]
    return values[0] if positive_label is not None else _nanmean(values)


def group_rates(
    y_true: Any, y_pred: Any, groups: Any, *, positive_label: int = 1
) -> dict[Any, dict[str, float]]:
    """Per-group TPR, FPR and selection rate (in %) with their supports n / pos / neg."""
    d = _prepare(y_true, y_pred, groups)
    block, support, _ = _rate_block(d, positive_label, np.ones(d.num_groups, dtype=bool))
    return {
        g: {
            **support[g],
            "tpr": block["group_tpr"][g],
            "fpr": block["group_fpr"][g],
            "selection_rate": block["group_selection_rate"][g],
        }
        for g in d.labels
    }


@metric("deo", title="DEO", unit="pp", better="lower", reported=True, of="tpr", variant="gap",
        undefined="fewer than 2 groups with positives")
def deo(
    y_true: Any, y_pred: Any, groups: Any, *, positive_label: int | None = 1, min_support: int = 0
) -> float:
    """DEO: max - min group TPR in percentage points (NaN groups ignored)."""
    return _rate_scalar(y_true, y_pred, groups, "deo", positive_label, min_support)


@metric("deodds", title="DEOdds", unit="pp", better="lower", reported=True, of="tpr, fpr", variant="combined",
        titles={"run": "DEOdds (sum)"}, undefined=lambda r: _why_odds_undefined(r))
def deodds(
    y_true: Any, y_pred: Any, groups: Any, *, positive_label: int | None = 1, min_support: int = 0
) -> float:
    """DEOdds: SUM of the group TPR gap and the group FPR gap, in percentage points."""
    return _rate_scalar(y_true, y_pred, groups, "deodds", positive_label, min_support)


@metric("dp_difference", title="DP difference", unit="pp", better="lower", reported=True, of="selection_rate",
        variant="gap")
def demographic_parity_difference(
    y_true: Any, y_pred: Any, groups: Any, *, positive_label: int | None = 1, min_support: int = 0
) -> float:
    """Demographic parity difference (fairlearn's): max - min group selection rate, in %."""
    return _rate_scalar(y_true, y_pred, groups, "dp_difference", positive_label, min_support)


@metric("eo_difference", title="EO difference", unit="pp", better="lower", reported=True, of="tpr", variant="gap")
def equal_opportunity_difference(
    y_true: Any, y_pred: Any, groups: Any, *, positive_label: int | None = 1, min_support: int = 0
) -> float:
    """Equal opportunity difference (fairlearn's): max - min group TPR, in %; NaN TPRs ignored."""
    return _rate_scalar(y_true, y_pred, groups, "eo_difference", positive_label, min_support)


_EODDS_AGG = {"max": "deodds_max", "worst_case": "deodds_max", "mean": "deodds_mean", "sum": "deodds"}


@metric("eodds_difference", title="EOdds difference", unit="pp", better="lower", reported=True, of="tpr, fpr",
        variant="combined")
def equalized_odds_difference(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    agg: str = "max",
    positive_label: int | None = 1,
    min_support: int = 0,
) -> float:
    """Equalized odds difference (fairlearn's): max ("max"), mean or sum of TPR and FPR gaps, in %."""
    if agg not in _EODDS_AGG:
        raise ValueError(f"agg must be one of {sorted(_EODDS_AGG)}, got {agg!r}")
    return _rate_scalar(y_true, y_pred, groups, _EODDS_AGG[agg], positive_label, min_support)


# ----------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------
def _as_scores(scores: Any, n: int, num_classes: int | None = None) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:  # binary: probability of class 1
        s = np.stack([1.0 - s, s], axis=1)
    if s.ndim != 2 or s.shape[0] != n:
        raise ValueError(f"scores must have shape (n_samples={n}, n_classes), got {s.shape}")
    if num_classes is not None and s.shape[1] != num_classes:
        raise ValueError(f"scores have {s.shape[1]} columns but there are {num_classes} classes")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if s.min() < -1e-6 or s.max() > 1 + 1e-6:
        raise ValueError(
            "scores must be probabilities in [0, 1] (apply a softmax to logits first); "
            f"got range [{s.min():g}, {s.max():g}]"
        )
    return s


def _confidence(d: _Data, scores: Any) -> np.ndarray:
    s = _as_scores(scores, len(d.y_true))
    if d.y_pred.min() < 0 or d.y_pred.max() >= s.shape[1]:
        raise ValueError(f"y_pred has class indices outside [0, {s.shape[1]}) of the scores' columns")
    return s[np.arange(len(d.y_pred)), d.y_pred]


def _ece_parts(
    conf: np.ndarray, correct: np.ndarray, codes: np.ndarray, num_groups: int, n_bins: int
) -> np.ndarray:
    """Per-group ECE in % with equal-width bins (lo, hi] over [0, 1] (0 falls in bin 0)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    cell = codes * n_bins + b
    size = num_groups * n_bins
    gap = np.bincount(cell, weights=correct.astype(np.float64), minlength=size) - np.bincount(
        cell, weights=conf, minlength=size
    )
    n_g = np.bincount(codes, minlength=num_groups)
    return _pct(np.abs(gap).reshape(num_groups, n_bins).sum(axis=1), n_g)


@metric("ece", title="ECE", unit="%", better="lower", needs=("y_true", "y_pred", "scores"), reported=True, of="ece")
def expected_calibration_error(
    y_true: Any, y_pred: Any, groups: Any = None, *, scores: Any, n_bins: int = 15
) -> float:
    """Expected calibration error in % (confidence = score of the predicted class, pooled)."""
    d = _prepare(y_true, y_pred, None)
    conf = _confidence(d, scores)
    return float(_ece_parts(conf, d.y_true == d.y_pred, d.codes, 1, n_bins)[0])


def group_expected_calibration_errors(
    y_true: Any, y_pred: Any, groups: Any, *, scores: Any, n_bins: int = 15
) -> dict[Any, float]:
    """Expected calibration error of every group, in %, as {group: ECE}."""
    d = _prepare(y_true, y_pred, groups)
    conf = _confidence(d, scores)
    return _group_dict(d.labels, _ece_parts(conf, d.y_true == d.y_pred, d.codes, d.num_groups, n_bins))


# ----------------------------------------------------------------------------------
# the full report
# ----------------------------------------------------------------------------------
def evaluate_predictions(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    scores: Any = None,
    positive_label: int = 1,
    min_support: int = 0,
    ddof: int = 0,
    ece_bins: int = 15,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """All metrics of one target as a JSON-serialisable dict (percent; NaN when undefined).

    ``num_classes`` defaults to the scores' column count, else ``max(label) + 1`` (at
    least 2). Binary targets (2 classes) report rates for ``positive_label``; multiclass
    targets report them one-vs-rest in ``per_class`` and their NaN-aware macro mean at the
    top level (``rate_average`` says which). ``scores`` (N x K probabilities, or the
    probability of class 1 for binary targets) add ``ece`` and ``group_ece``.
    """
    d = _prepare(y_true, y_pred, groups)
    s = None if scores is None else _as_scores(scores, len(d.y_true))
    num_classes = _num_classes(d, s, num_classes, positive_label)
    included = _included(d, min_support)
    report, undefined = _accuracy_report(d, included, num_classes, min_support, ddof)
    if num_classes == 2:
        undefined += _add_binary_rates(report, d, positive_label, included)
    else:
        undefined += _add_macro_rates(report, d, num_classes, included)
    if s is not None:
        _add_calibration(report, d, s, included, ece_bins)
    report["excluded_groups"] = [g for g, keep in zip(d.labels, included) if not keep]
    report["undefined"] = undefined
    for spec in metric_specs().values():  # metrics declared by plugins: computed from the same columns
        if not spec.reported and spec.name not in report:
            report[spec.name] = float(spec.value(y_true, y_pred, groups, scores))
    return report


def _num_classes(d: _Data, s: np.ndarray | None, num_classes: int | None, positive_label: int) -> int:
    """The target's class count (given, the scores' columns, else the largest label + 1), checked."""
    if s is not None:
        if num_classes is None:
            num_classes = s.shape[1]
        elif s.shape[1] != num_classes:
            raise ValueError(f"scores have {s.shape[1]} columns but num_classes={num_classes}")
    top = int(max(d.y_true.max(), d.y_pred.max()))
    if num_classes is None:
        num_classes = max(2, top + 1)
    if min(d.y_true.min(), d.y_pred.min()) < 0 or top >= num_classes:
        raise ValueError(f"class indices must lie in [0, {num_classes}); got labels up to {top}")
    if num_classes == 2 and positive_label not in (0, 1):
        raise ValueError(f"positive_label must be 0 or 1 for a binary target, got {positive_label!r}")
    return num_classes


def _accuracy_report(d: _Data, included: np.ndarray, num_classes: int, min_support: int,
                     ddof: int) -> tuple[dict[str, Any], list[str]]:
    """The report's header and accuracy-based metrics, and why any of them is undefined."""
    undefined: list[str] = []
    if not included.any():
        undefined.append(f"every group has fewer than min_support={min_support} samples: no aggregates")
    accs = _group_accuracy_array(d)
    inc_accs = accs[included]
    ratio = _ratio_from_accs(inc_accs)
    dob = _dob_from_accs(inc_accs, ddof)
    if included.sum() < 2:
        undefined.append("fewer than 2 groups to compare: Max/Min ratio and DoB undefined")
    else:
        if math.isnan(ratio):
            undefined.append("minimum group accuracy is 0: Max/Min ratio undefined")
        if math.isnan(dob):
            undefined.append(f"DoB with ddof={ddof} needs more than {ddof} groups: undefined")
    report: dict[str, Any] = {
        "n": int(len(d.y_true)),
        "num_classes": int(num_classes),
        "num_groups": d.num_groups,
        "min_support": int(min_support),
        "ddof": int(ddof),
        "accuracy": float(np.mean(d.y_true == d.y_pred) * 100.0),
        "group_accuracy": _group_dict(d.labels, accs),
        "max_group_accuracy": _max(accs, included),
        "min_group_accuracy": _min(accs, included),
        "worst_group_accuracy": _min(accs, included),
        "worst_cell_accuracy": _worst_cell(d, min_support),
        "max_min_ratio": ratio,
        "dob": dob,
    }
    return report, undefined


def _add_binary_rates(report: dict[str, Any], d: _Data, positive_label: int, included: np.ndarray) -> list[str]:
    block, support, undefined = _rate_block(d, positive_label, included)
    report.update(block)
    report["group_support"] = support
    report["rate_average"] = "binary"
    report["positive_label"] = int(positive_label)
    return undefined


def _add_macro_rates(report: dict[str, Any], d: _Data, num_classes: int, included: np.ndarray) -> list[str]:
    """One-vs-rest rate blocks per class (``per_class``) and the NaN-aware macro mean of each of
    their keys at the top level (per group for the per-group keys)."""
    per_class: dict[int, dict[str, Any]] = {}
    undefined: list[str] = []
    for c in range(num_classes):
        block, support, msgs = _rate_block(d, c, included, context=f"class {c}: ")
        per_class[c] = {**block, "group_support": support, "undefined": msgs}
        undefined += msgs
    keys = [k for k in per_class[0] if k not in ("group_support", "undefined")]
    for key in (k for k in keys if not isinstance(per_class[0][k], dict)):
        report[key] = _nanmean([per_class[c][key] for c in per_class])
    for key in (k for k in keys if isinstance(per_class[0][k], dict)):
        report[key] = {g: _nanmean([per_class[c][key][g] for c in per_class]) for g in d.labels}
    class_counts = {c: d.count(d.y_true == c) for c in range(num_classes)}
    report["group_support"] = {
        g: {"n": int(n), "class_counts": {c: int(class_counts[c][i]) for c in class_counts}}
        for i, (g, n) in enumerate(zip(d.labels, d.n_g))
    }
    report["per_class"] = per_class
    report["rate_average"] = "macro"
    report["positive_label"] = None
    return undefined


def _add_calibration(report: dict[str, Any], d: _Data, s: np.ndarray, included: np.ndarray, ece_bins: int) -> None:
    conf = _confidence(d, s)
    correct = d.y_true == d.y_pred
    report["ece_bins"] = int(ece_bins)
    report["ece"] = float(_ece_parts(conf, correct, np.zeros_like(d.codes), 1, ece_bins)[0])
    group_ece = _ece_parts(conf, correct, d.codes, d.num_groups, ece_bins)
    report["group_ece"] = _group_dict(d.labels, group_ece)
    report["max_group_ece"] = _max(group_ece, included)


# ----------------------------------------------------------------------------------
# why a metric is undefined, read from a report's values (MetricSpec.undefined)
# ----------------------------------------------------------------------------------
def _why_dispersion_undefined(report: Mapping[str, Any], otherwise: str) -> str | None:
    """A spread of group accuracies: fewer than 2 groups compared, else ``otherwise``."""
    accs = report.get("group_accuracy")
    if not isinstance(accs, Mapping):
        return None
    excluded = set(report.get("excluded_groups") or [])
    return "fewer than 2 groups" if len([g for g in accs if g not in excluded]) < 2 else otherwise


def _why_odds_undefined(report: Mapping[str, Any]) -> str:
    """DEOdds adds the TPR gap and the FPR gap: whichever is undefined."""
    deo_ = report.get("deo")
    if not isinstance(deo_, (int, float)) or math.isnan(deo_):
        return "fewer than 2 groups with positives"
    return "fewer than 2 groups with negatives"


# report keys without a stand-alone function: declared here, computed in evaluate_predictions
_SCORES = ("y_true", "y_pred", "groups", "scores")
declare("min_group_accuracy", __name__, title="Min group accuracy", unit="%", better="higher", of="accuracy",
        variant="min", titles={"attributes": "Min grp acc", "run": "min group"})
declare("max_group_accuracy", __name__, title="Max group accuracy", unit="%", better="higher", of="accuracy",
        variant="max", titles={"attributes": "Max grp acc", "run": "max group"})
declare("tpr", __name__, title="TPR", unit="%", better="higher", of="tpr", undefined="no positives")
declare("max_group_tpr", __name__, title="Max group TPR", unit="%", better="higher", of="tpr", variant="max",
        titles={"attributes": "Max grp TPR"}, undefined="no positives in any group")
declare("min_group_tpr", __name__, title="Min group TPR", unit="%", better="higher", of="tpr", variant="min",
        titles={"attributes": "Min grp TPR"}, undefined="no positives in any group")
declare("fpr", __name__, title="FPR", unit="%", better="lower", of="fpr", undefined="no negatives")
declare("max_group_fpr", __name__, title="Max group FPR", unit="%", better="lower", of="fpr", variant="max",
        undefined="no negatives in any group")
declare("min_group_fpr", __name__, title="Min group FPR", unit="%", better="lower", of="fpr", variant="min",
        undefined="no negatives in any group")
declare("fpr_gap", __name__, title="FPR gap", unit="pp", better="lower", of="fpr", variant="gap",
        undefined="fewer than 2 groups with negatives")
declare("deodds_max", __name__, title="DEOdds (max)", unit="pp", better="lower", of="tpr, fpr", variant="combined")
declare("deodds_mean", __name__, title="DEOdds (mean)", unit="pp", better="lower", of="tpr, fpr", variant="combined")
declare("max_group_ece", __name__, title="Max group ECE", unit="%", better="lower", needs=_SCORES, of="ece",
        variant="max")
