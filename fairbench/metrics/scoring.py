"""Bring your own predictions: score a table of per-sample predictions.

A predictions table has one row per test sample with a target column, a prediction
column, one or more protected-attribute columns and optionally one probability column
per class. Several group columns form intersectional groups joined with ``"|"``
(``race="White"``, ``gender="Male"`` -> ``"White|Male"``). Target and prediction may
hold strings ("Male" / "Female"), numbers or booleans: both are mapped to one shared
integer vocabulary, the sorted union of their values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.metrics.fairness import evaluate_predictions
from fairbench.metrics.specs import metric_specs
from fairbench.metrics.uncertainty import bootstrap_ci

__all__ = ["read_predictions", "score_frame", "score_file", "GROUP_SEPARATOR"]

GROUP_SEPARATOR = "|"
_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _describe(df: pd.DataFrame) -> str:
    source = df.attrs.get("source")
    return f"predictions file {source!s}" if source else "the predictions frame"


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions table from CSV (``.csv``, ``.csv.gz``, ``.tsv``) or Parquet (``.parquet``, ``.pq``).

    The frame's ``attrs["source"]`` records the path, so later errors can name the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"predictions file not found: {p}")
    name = p.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        df = pd.read_parquet(p)
    elif name.endswith(_CSV_SUFFIXES):
        df = pd.read_csv(p, sep="\t" if name.endswith(".tsv") else ",")
    else:
        raise ValueError(
            f"cannot read predictions file {p}: unknown suffix; expected one of "
            f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
        )
    df.attrs["source"] = str(p)
    return df


def _require_columns(df: pd.DataFrame, wanted: dict[str, list[str]]) -> None:
    missing = [
        f"{col!r} ({role})" for role, cols in wanted.items() for col in cols if col not in df.columns
    ]
    if missing:
        raise ValueError(
            f"{_describe(df)} has no column {', '.join(missing)}; "
            f"available columns: {', '.join(map(repr, map(str, df.columns)))}"
        )


def _plain(x: Any) -> Any:
    """numpy / pandas scalar -> python scalar."""
    return x.item() if isinstance(x, np.generic) else x


def _label_values(series: pd.Series, role: str, df: pd.DataFrame) -> list[Any]:
    missing = int(series.isna().sum())
    if missing:
        raise ValueError(f"column {series.name!r} ({role}) of {_describe(df)} has {missing} missing values")
    return [_plain(v) for v in series.tolist()]


def _is_number(v: Any) -> bool:
    return isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating))


def _normalise(values: list[Any], numeric: bool) -> list[Any]:
    if numeric:  # 1.0 and 1 and True are one label; keep ints as ints
        return [int(v) if float(v).is_integer() else float(v) for v in values]
    return [str(v) for v in values]


def _vocabulary(
    target: list[Any], pred: list[Any], positive: Any
) -> tuple[list[Any], list[Any], list[Any], Any]:
    numeric = all(_is_number(v) for v in target + pred)
    if numeric and isinstance(positive, str):  # e.g. "1" from the command line
        try:
            positive = float(positive)
        except ValueError:
            numeric = False
    t, p = _normalise(target, numeric), _normalise(pred, numeric)
    vocab = sorted(set(t) | set(p))
    if numeric and set(vocab) <= {0, 1}:
        vocab = [0, 1]  # a binary 0/1 target even if only one value occurs
    if positive is not None:
        pos = _normalise([positive], numeric)[0]
        if pos not in vocab:
            raise ValueError(f"positive label {positive!r} does not occur; labels seen: {vocab}")
        if len(vocab) > 2:
            raise ValueError(
                f"positive= applies to binary targets only; this target has {len(vocab)} labels "
                f"{vocab} and is scored one-vs-rest per class (macro mean)"
            )
    elif len(vocab) > 2:
        pos = None
    elif 1 in vocab or "1" in vocab or "True" in vocab:
        pos = 1 if 1 in vocab else ("1" if "1" in vocab else "True")
    elif len(vocab) == 2:
        pos = vocab[1]
    else:
        raise ValueError(
            f"only one label ({vocab[0]!r}) occurs in target and prediction: pass positive= "
            "to say which label is the positive class"
        )
    return t, p, vocab, pos


def _joined_groups(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    for col in columns:
        missing = int(df[col].isna().sum())
        if missing:
            raise ValueError(f"group column {col!r} of {_describe(df)} has {missing} missing values")
    parts = [df[col].map(lambda v: str(_plain(v))).tolist() for col in columns]
    return np.array([GROUP_SEPARATOR.join(row) for row in zip(*parts)], dtype=object)


def score_frame(
    df: pd.DataFrame,
    *,
    target: str,
    pred: str,
    groups: list[str] | str,
    scores: list[str] | None = None,
    positive: Any = None,
    min_support: int = 0,
    ddof: int = 0,
    ece_bins: int = 15,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Score a predictions frame: the ``evaluate_predictions`` report plus label bookkeeping.

    ``groups`` names one or more protected-attribute columns (several: intersectional,
    joined with ``"|"``). ``scores`` names one probability column per label, in the
    sorted label order given by the result's ``labels``. The positive label of a binary
    target is ``positive`` if given, else ``1`` / ``"1"`` / ``True`` if present, else the
    second label in sorted order; multiclass targets are scored one-vs-rest (macro) and
    ``positive_label`` is None. Added keys: ``positive_label``, ``labels``,
    ``group_columns``, ``target_column``, ``pred_column``; ``per_class`` (multiclass) is
    keyed by label. ``bootstrap`` > 0 adds ``bootstrap``: a 95% percentile interval over test
    samples (that many resamples, ``seed``) of every metric with a stand-alone function.
    """
    group_cols = [groups] if isinstance(groups, str) else list(groups)
    if not group_cols:
        raise ValueError("groups must name at least one column")
    score_cols = list(scores) if scores is not None else []
    _require_columns(df, {"target": [target], "pred": [pred], "groups": group_cols, "scores": score_cols})
    if len(df) == 0:
        raise ValueError(f"{_describe(df)} has no rows")

    t, p, vocab, pos = _vocabulary(
        _label_values(df[target], "target", df), _label_values(df[pred], "pred", df), positive
    )
    index = {label: i for i, label in enumerate(vocab)}
    y_true = np.array([index[v] for v in t], dtype=np.int64)
    y_pred = np.array([index[v] for v in p], dtype=np.int64)

    probs = _score_probabilities(df, score_cols, vocab)
    report = evaluate_predictions(
        y_true,
        y_pred,
        _joined_groups(df, group_cols),
        scores=probs,
        positive_label=index[pos] if pos is not None else 1,
        min_support=min_support,
        ddof=ddof,
        ece_bins=ece_bins,
        num_classes=len(vocab),
    )
    _relabel_classes(report, vocab)
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be a number of resamples >= 0, got {bootstrap}")
    if bootstrap > 0:
        report["bootstrap"] = bootstrap_intervals(
            y_true, y_pred, _joined_groups(df, group_cols), probs, n_resamples=bootstrap, seed=seed,
            options={"positive_label": (index[pos] if pos is not None else None), "min_support": min_support, "ddof": ddof},
        )
    report["positive_label"] = pos
    report["labels"] = vocab
    report["group_columns"] = group_cols
    report["target_column"] = target
    report["pred_column"] = pred
    return report


def _score_probabilities(df: pd.DataFrame, score_cols: list[str], vocab: list[Any]) -> np.ndarray | None:
    """The (N, labels) probability columns, one per label in ``vocab``'s order; None without any."""
    if not score_cols:
        return None
    if len(score_cols) != len(vocab):
        raise ValueError(
            f"scores names {len(score_cols)} columns but there are {len(vocab)} labels {vocab}: "
            "give one probability column per label, in that order"
        )
    try:
        return df[score_cols].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"score columns {score_cols} of {_describe(df)} are not numeric: {exc}") from exc


def _relabel_classes(report: dict[str, Any], vocab: list[Any]) -> None:
    """In place: a multiclass report's per-class blocks and messages keyed by label, not index."""
    if "per_class" in report:
        report["per_class"] = {vocab[c]: block for c, block in report["per_class"].items()}
        for block in report["per_class"].values():
            block["undefined"] = [_relabel_class_message(m, vocab) for m in block["undefined"]]
        report["undefined"] = [
            _relabel_class_message(m, vocab) for m in report["undefined"]
        ]


def _relabel_class_message(message: str, vocab: list[Any]) -> str:
    head, sep, rest = message.partition(": ")
    if sep and head.startswith("class "):
        try:
            return f"class {vocab[int(head[6:])]!r}: {rest}"
        except (ValueError, IndexError):
            return message
    return message


def score_file(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Read a predictions CSV / Parquet file and score it (``score_frame`` keywords); adds ``source``."""
    report = score_frame(read_predictions(path), **kwargs)
    report["source"] = str(path)
    return report


def bootstrap_intervals(y_true: Any, y_pred: Any, groups: Any, scores: Any = None, *, n_resamples: int = 1000,
                        seed: int = 0, confidence: float = 0.95, options: dict[str, Any] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """A percentile bootstrap interval over test samples (:func:`bootstrap_ci`) of every registered
    metric that has a stand-alone function (and its scores, if it needs them). ``options``
    (positive_label, min_support, ddof ...) go to the functions that take them."""
    import inspect

    out: dict[str, dict[str, Any]] = {}
    for name, spec in metric_specs().items():
        if spec.compute is None or ("scores" in spec.needs and scores is None):
            continue
        accepted = inspect.signature(spec.compute).parameters
        kwargs = {k: v for k, v in (options or {}).items() if k in accepted}
        interval = bootstrap_ci(spec.compute, y_true, y_pred, groups, n_resamples=n_resamples, confidence=confidence,
                                seed=seed, scores=scores if "scores" in spec.needs else None, **kwargs)
        out[name] = {"low": interval.low, "high": interval.high, "confidence": confidence,
                     "n_resamples": n_resamples, "n_dropped": interval.n_dropped, "seed": seed}
    return out
