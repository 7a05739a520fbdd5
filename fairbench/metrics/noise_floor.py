"""The noise floor of a fairness metric on a given test split: the gap a perfectly fair classifier
shows by chance alone, at the observed accuracy, class balance and group supports.

A group gap is an estimate from a finite test split: even a classifier whose error rates are the
same in every group shows a non-zero DoB or DEO, larger when groups are small, so a table can only
call a gap (or a method's reduction of it) real when it clears this floor. The floor is computed,
not assumed: a group-blind classifier with the pooled error rates is simulated on the split's own
labels and groups (how: docs/fair-comparison.md, "Statistics").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fairbench.metrics import fairness

#: metrics with a floor: {name: fn(y_true, y_pred, groups) -> value}, all "lower is fairer" gaps
GAP_METRICS: dict[str, Callable[..., float]] = {
    "dob": fairness.degree_of_bias,
    "deo": fairness.deo,
    "deodds": fairness.deodds,
    "worst_group_gap": lambda y, p, g: fairness.accuracy(y, p) - fairness.worst_group_accuracy(y, p, g),
}


@dataclass(frozen=True)
class Floor:
    mean: float  # expected value for a perfectly fair classifier
    upper: float  # its upper quantile (default 95 %): a gap below this is within noise
    quantile: float
    simulations: int

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "upper": self.upper, "quantile": self.quantile, "simulations": self.simulations}


def _confusion_rows(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """k x k row-normalised pooled confusion matrix (a class absent from y_true: identity row)."""
    counts = np.zeros((k, k))
    np.add.at(counts, (y_true, y_pred), 1.0)
    rows = counts.sum(1, keepdims=True)
    return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(k))


def simulate_fair_predictions(y_true: np.ndarray, y_pred: np.ndarray, rng: np.random.Generator,
                              n: int) -> np.ndarray:
    """n x N predictions of a group-blind classifier with the pooled confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = int(max(y_true.max(), y_pred.max())) + 1
    cum = np.cumsum(_confusion_rows(y_true, y_pred, k), axis=1)
    u = rng.random((n, len(y_true)))
    # inverse-CDF draw per sample from its true class's confusion row
    return (u[..., None] > cum[y_true][None, :, :]).sum(-1).clip(max=k - 1)


def noise_floors(y_true: Any, y_pred: Any, groups: Any, metrics: tuple[str, ...] = ("dob", "deo", "deodds"),
                 simulations: int = 200, quantile: float = 0.95, seed: int = 0) -> dict[str, Floor]:
    """The floor of each gap metric for this split and this model's pooled error rates."""
    unknown = [m for m in metrics if m not in GAP_METRICS]
    if unknown:
        raise ValueError(f"no noise floor for {unknown}; known: {', '.join(GAP_METRICS)}")
    y_true = np.asarray(y_true, dtype=np.int64)
    groups = np.asarray(groups)
    sims = simulate_fair_predictions(y_true, np.asarray(y_pred), np.random.default_rng(seed), simulations)
    out = {}
    for name in metrics:
        fn = GAP_METRICS[name]
        values = np.array([fn(y_true, sim, groups) for sim in sims], dtype=float)
        values = values[~np.isnan(values)]
        if values.size == 0:
            out[name] = Floor(float("nan"), float("nan"), quantile, simulations)
        else:
            out[name] = Floor(float(values.mean()), float(np.quantile(values, quantile)), quantile, simulations)
    return out
