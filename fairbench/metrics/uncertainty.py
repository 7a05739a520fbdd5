"""Uncertainty of metrics: bootstrap intervals over test samples, t-intervals over seeds,
and NaN-aware means over several target attributes.

No scipy: the Student-t quantile for integer degrees of freedom is computed exactly from
the closed-form t distribution (Abramowitz & Stegun 26.7.3-4) and inverted by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BootstrapInterval",
    "bootstrap_ci",
    "t_quantile",
    "mean_t_interval",
    "mean_over_attributes",
    "resample_blocks",
    "clipped_t_interval",
    "paired_difference",
    "two_sided_t_p_value",
    "holm_adjusted",
]

NAN = float("nan")


# ----------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------
class BootstrapInterval(tuple):
    """``(low, high)`` that also carries how many resamples were usable.

    Unpacks as a plain pair; ``n_valid`` resamples gave a finite metric value and
    ``n_dropped`` gave NaN (e.g. a resample without positives in some group) and were
    left out of the percentiles.
    """

    low: float
    high: float
    n_valid: int
    n_dropped: int
    confidence: float

    def __new__(cls, low: float, high: float, *, n_valid: int, n_dropped: int, confidence: float):
        obj = super().__new__(cls, (float(low), float(high)))
        obj.low, obj.high = float(low), float(high)
        obj.n_valid, obj.n_dropped, obj.confidence = int(n_valid), int(n_dropped), float(confidence)
        return obj

    def __getnewargs_ex__(self):  # keeps pickling (multiprocessing) working
        return (self.low, self.high), {
            "n_valid": self.n_valid,
            "n_dropped": self.n_dropped,
            "confidence": self.confidence,
        }


# Resample indices are drawn in blocks of at most this many entries (memory bound).
_BLOCK_ENTRIES = 1 << 22


def resample_blocks(n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` samples as blocks of m x n indices (with replacement), m at
    most what fits ``_BLOCK_ENTRIES``; ``n_resamples`` rows in all, in a fixed order for one rng."""
    block = max(1, min(n_resamples, _BLOCK_ENTRIES // max(n, 1)))
    done = 0
    while done < n_resamples:
        m = min(block, n_resamples - done)
        yield rng.integers(0, n, size=(m, n))
        done += m


def bootstrap_ci(
    metric_fn: Callable[..., float],
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    scores: Any = None,
    **metric_kwargs: Any,
) -> BootstrapInterval:
    """Percentile bootstrap interval of ``metric_fn`` over test samples.

    Each resample draws ``len(y_true)`` sample indices with replacement (seeded
    ``numpy.random.default_rng(seed)``; indices are drawn as whole blocks) and calls
    ``metric_fn(y_true[idx], y_pred[idx], groups[idx], **metric_kwargs)`` (plus
    ``scores=scores[idx]`` when scores are given). Resamples whose metric is NaN are
    dropped and counted in the result's ``n_dropped``; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles (linear
    interpolation) of the rest, or ``(nan, nan)`` if none is left. The same seed and
    inputs give the same interval.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    n = len(yt)
    if n == 0:
        raise ValueError("no samples: y_true is empty")
    if len(yp) != n:
        raise ValueError(f"y_true has {n} entries but y_pred has {len(yp)}")
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.dtype.kind in "US":
        g = g.astype(object)  # same labels; object arrays group ~10x faster per resample
    if g is not None and len(g) != n:
        raise ValueError(f"groups has {len(g)} entries but y_true has {n}")
    s = None if scores is None else np.asarray(scores)
    if s is not None and len(s) != n:
        raise ValueError(f"scores has {len(s)} rows but y_true has {n}")

    values = np.empty(n_resamples, dtype=np.float64)
    done = 0
    for block in resample_blocks(n, n_resamples, np.random.default_rng(seed)):
        for idx in block:
            kwargs = dict(metric_kwargs)
            if s is not None:
                kwargs["scores"] = s[idx]
            value = metric_fn(yt[idx], yp[idx], None if g is None else g[idx], **kwargs)
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
                raise TypeError(
                    f"metric_fn must return a number, got {type(value).__name__}; "
                    "bootstrap a scalar metric (e.g. deo, dob), not a per-group dict"
                )
            values[done] = float(value)
            done += 1

    valid = values[np.isfinite(values)]
    n_dropped = n_resamples - valid.size
    if valid.size == 0:
        low = high = NAN
    else:
        alpha = (1.0 - confidence) / 2.0
        low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return BootstrapInterval(low, high, n_valid=valid.size, n_dropped=n_dropped, confidence=confidence)


# ----------------------------------------------------------------------------------
# Student t
# ----------------------------------------------------------------------------------
def _t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term, total = math.cos(theta), math.cos(theta)
        for k in range(1, (df - 3) // 2 + 1):  # coefficients 2/3, (2*4)/(3*5), ...
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):  # coefficients 1/2, (1*3)/(2*4), ...
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with integer ``df`` >= 1 at probability ``p`` in (0, 1)."""
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * p - 1.0  # P(|T| <= t)
    lo, hi = 0.0, 1.0
    while _t_central_probability(hi, df) < target:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _t_central_probability(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the t-interval over seeds: ``(mean, half_width, n)``.

    NaN values are dropped; ``n`` is the number of values used. ``half_width`` is
    ``t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with the sample std ``s`` (ddof 1), and
    NaN when ``n < 2``; ``mean`` is NaN when ``n == 0``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = np.asarray(list(values), dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return NAN, NAN, 0
    mean = float(v.mean())
    if n < 2:
        return mean, NAN, n
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * float(np.std(v, ddof=1)) / math.sqrt(n)
    return mean, float(half), n


# ----------------------------------------------------------------------------------
# mean over target attributes
# ----------------------------------------------------------------------------------
def _number(value: Any, key: str) -> float:
    if value is None:
        return NAN
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"key {key!r} is not a number in every report (got {type(value).__name__})")
    return float(value)


def mean_over_attributes(
    reports: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
    keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-key NaN-aware mean of several target attributes' reports (e.g. 13 CelebA attributes).

    Each metric is averaged as computed per attribute (DEO is the mean of per-attribute
    DEOs, never recomputed from averaged TPRs). For every key the result also holds
    ``{key}_undefined_count``: how many reports had it NaN, None or missing; the mean is
    over the others (NaN if none). ``keys`` defaults to every registered one-number metric
    (:mod:`fairbench.metrics.specs`) present in at least one report. ``reports`` may be a list
    or a {attribute: report} mapping; ``num_reports`` gives their number.
    """
    items = list(reports.values()) if isinstance(reports, Mapping) else list(reports)
    if keys is None:
        from fairbench.metrics.specs import all_specs

        keys = [s.name for s in all_specs() if not s.per_group and any(s.name in r for r in items)]
    out: dict[str, Any] = {"num_reports": len(items)}
    for key in keys:
        vals = np.array([_number(r.get(key), key) for r in items], dtype=np.float64)
        ok = ~np.isnan(vals)
        out[key] = float(vals[ok].mean()) if ok.any() else NAN
        out[f"{key}_undefined_count"] = int((~ok).sum())
    return out


# ----------------------------------------------------------------------------------
# intervals that respect a metric's range, and paired differences over seeds
# ----------------------------------------------------------------------------------
#: below this many seeds an interval is printed but called rough
MIN_SEEDS_FOR_INTERVALS = 5


def clipped_t_interval(values: Iterable[float], bounds: tuple[float, float] | None = (0.0, 100.0),
                       confidence: float = 0.95, sample_variance: float = 0.0) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the t-interval over seeds, clipped to the metric's range
    (``bounds``; None = unbounded), so that an interval never leaves 0-100 %.

    ``sample_variance``: the test-sample variance of the mean over seeds (e.g. its bootstrap
    variance over test images); it is added to the seed-to-seed variance of the mean, s^2 / n,
    so the interval holds both sources of noise (degrees of freedom stay n - 1)."""
    mean, half, n = mean_t_interval(values, confidence)
    if sample_variance and not math.isnan(half):
        t = t_quantile((1.0 + confidence) / 2.0, n - 1)
        half = t * math.sqrt((half / t) ** 2 + sample_variance)
    low, high = mean - half, mean + half
    if bounds is not None and not math.isnan(half):
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high, n


class PairedDifference(tuple):
    """``(mean, low, high)`` of method - baseline over the seeds both have, with ``n``,
    ``seeds``, ``rough`` (n < MIN_SEEDS_FOR_INTERVALS), ``excludes_zero`` and ``p_value``
    (two-sided, of the same t statistic the interval inverts; NaN with fewer than 2 seeds)."""

    def __new__(cls, mean: float, low: float, high: float, seeds: list[Any], p_value: float = NAN):
        self = super().__new__(cls, (mean, low, high))
        self.mean, self.low, self.high, self.p_value = mean, low, high, p_value
        self.seeds, self.n = seeds, len(seeds)
        self.rough = self.n < MIN_SEEDS_FOR_INTERVALS
        self.excludes_zero = not math.isnan(low) and (low > 0 or high < 0)
        return self

    def describe(self, unit: str = "pp") -> str:
        if self.n == 0:
            return "no common seeds"
        if math.isnan(self.low):
            return f"{self.mean:+.2f} {unit} (n={self.n}: no interval)"
        text = f"{self.mean:+.2f} {unit} [{self.low:+.2f}, {self.high:+.2f}] (paired, n={self.n})"
        return text + (" rough: fewer than 5 seeds" if self.rough else "")


def paired_difference(method: Mapping[Any, float], baseline: Mapping[Any, float],
                      span: float | None = 100.0, confidence: float = 0.95,
                      sample_variance: float = 0.0) -> PairedDifference:
    """Paired t-interval of ``method[s] - baseline[s]`` over the seeds s both have (NaN dropped).

    Same seed = same data order and initialisation, so pairing removes the seed-to-seed
    variance both share. ``sample_variance``: the test-sample variance of the mean difference
    (both resampled with the same test images), added as in :func:`clipped_t_interval`.
    ``span`` (the metric's range width) clips the interval to [-span, span]; None leaves it
    unbounded. The p-value is that of t = mean / its standard error, n - 1 degrees of freedom."""
    seeds = sorted(s for s in method if s in baseline
                   and not (math.isnan(float(method[s])) or math.isnan(float(baseline[s]))))
    diffs = [float(method[s]) - float(baseline[s]) for s in seeds]
    if not diffs:
        return PairedDifference(NAN, NAN, NAN, [])
    mean, low, high, _ = clipped_t_interval(diffs, None if span is None else (-span, span), confidence,
                                            sample_variance)
    p_value = NAN
    if len(diffs) >= 2:
        se = math.sqrt(float(np.var(diffs, ddof=1)) / len(diffs) + sample_variance)
        p_value = two_sided_t_p_value(mean / se, len(diffs) - 1) if se > 0 else (1.0 if mean == 0 else 0.0)
    return PairedDifference(mean, low, high, seeds, p_value)


def two_sided_t_p_value(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with integer ``df`` >= 1."""
    if math.isnan(t):
        return NAN
    return max(0.0, 1.0 - _t_central_probability(abs(t), int(df))) if math.isfinite(t) else 0.0


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN, not counted).

    Sorted ascending, p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)), m the number
    of tests; a hypothesis is rejected at level alpha when its adjusted p-value is <= alpha,
    which controls the family-wise error rate over the m tests."""
    valid = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(valid)
    out = [NAN] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(valid)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
