"""Test-sample noise of a run's headline metrics: the same metrics on many bootstrap resamples
of its test predictions at once (vectorised group counts), for intervals that hold it beside
the seed-to-seed variation (:mod:`fairbench.results.layouts.protocol`).

The resampled indices depend only on the test split itself (a digest of its sample ids), never
on the method: every run evaluated on the same test images is resampled with the same indices,
so a per-replicate difference of two methods is a paired bootstrap over test images, and a mean
over seeds that share a test split resamples it once for all of them. Runs on different test
splits (a generated dataset drawn per seed) get independent resamples.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fairbench.metrics.uncertainty import resample_blocks

#: the metrics resampled, as their report keys (definitions of fairbench.metrics.fairness)
RESAMPLED = ("accuracy", "worst_group_accuracy", "worst_cell_accuracy", "dob")
#: bootstrap replicates per test split: enough for a variance (its relative error ~ sqrt(2 / B) = 6 %)
TEST_RESAMPLES = 500


@dataclass(frozen=True)
class TestSample:
    """One set of test predictions reduced to what the resampled metrics read."""

    split_digest: str  # the test images (their ids, in order): equal digests = the same split
    correct: np.ndarray  # bool per sample
    group: np.ndarray  # group code per sample
    cell: np.ndarray  # (true class, group) cell code per sample
    n_groups: int
    n_cells: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "TestSample":
        ids = frame["sample_id"].astype(str) if "sample_id" in frame.columns else frame["index"].astype(str)
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        target = frame["target"].to_numpy(dtype=np.int64)
        group = pd.factorize(frame["group"].astype(str), sort=True)[0].astype(np.int64)
        n_groups = int(group.max()) + 1
        return cls(digest, target == frame["pred"].to_numpy(dtype=np.int64), group, target * n_groups + group,
                   n_groups, (int(target.max()) + 1) * n_groups)

    def metrics(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric of ``RESAMPLED`` on each row of ``idx`` (m x n sample indices)."""
        m = len(idx)
        offsets = np.arange(m)[:, None]
        hits = self.correct[idx]

        def accuracies(codes: np.ndarray, k: int) -> np.ndarray:  # m x k, NaN for an empty group or cell
            flat = (offsets * k + codes[idx]).ravel()
            total = np.bincount(flat, minlength=m * k).reshape(m, k)
            right = np.bincount(flat, weights=hits.ravel(), minlength=m * k).reshape(m, k)
            return np.where(total > 0, 100.0 * right / np.maximum(total, 1), np.nan)

        groups = accuracies(self.group, self.n_groups)
        cells = accuracies(self.cell, self.n_cells)
        defined = np.isfinite(groups).sum(1)
        with warnings.catch_warnings():  # a resample without any sample of a group: NaN, dropped later
            warnings.simplefilter("ignore", RuntimeWarning)
            return {"accuracy": 100.0 * hits.mean(1), "worst_group_accuracy": np.nanmin(groups, 1),
                    "worst_cell_accuracy": np.nanmin(cells, 1),
                    "dob": np.where(defined >= 2, np.nanstd(groups, 1), np.nan)}

    def point(self) -> dict[str, float]:
        """The metrics on the split as it is (no resampling)."""
        return {k: float(v[0]) for k, v in self.metrics(np.arange(len(self.correct))[None, :]).items()}

    def resampled(self, n_resamples: int = TEST_RESAMPLES) -> dict[str, np.ndarray]:
        """Each metric on ``n_resamples`` bootstrap resamples drawn from this split's digest."""
        rng = np.random.default_rng(int(self.split_digest, 16))
        parts = [self.metrics(block) for block in resample_blocks(len(self.correct), n_resamples, rng)]
        return {k: np.concatenate([p[k] for p in parts]) for k in RESAMPLED}


def variance_of_mean(per_seed: list[np.ndarray], minus: list[np.ndarray] | None = None) -> float:
    """The bootstrap variance over test samples of the mean over seeds of one metric (of the
    paired difference ``per_seed[i] - minus[i]`` if ``minus`` is given), from the replicate
    arrays of :meth:`TestSample.resampled`; replicates where any value is NaN are left out."""
    values = np.stack(per_seed) - (np.stack(minus) if minus is not None else 0.0)
    means = values.mean(0)
    means = means[np.isfinite(means)]
    return float(means.var(ddof=1)) if means.size > 1 else 0.0


def binomial_standard_error(percent: Any, n: Any) -> float:
    """The standard error, in percentage points, of an accuracy of ``percent`` % over ``n`` samples."""
    if percent is None or not n:
        return float("nan")
    p = float(percent) / 100.0
    return 100.0 * float(np.sqrt(max(p * (1.0 - p), 0.0) / float(n)))
