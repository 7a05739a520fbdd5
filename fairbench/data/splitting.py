"""Fixed-seed splits stratified by group, for datasets without an official split.

Rule, per stratum (group) of ``n`` samples: each held-out split (e.g. val) gets
``round(fraction * n)`` samples, but at least one whenever the stratum has enough samples
for every held-out split to get one and train to keep one (``n >= held-out splits + 1``),
and never the whole stratum. So a group with 6 training images still appears in a 10%
validation split (1 image), which plain rounding would leave empty.

Each stratum is shuffled by its own generator, seeded by ``(seed, crc32(stratum))``: adding
or removing one group (e.g. the race-4 view dropping Latino_Hispanic) leaves every other
group's assignment unchanged.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np


def held_out_counts(n: int, fractions: Sequence[float]) -> list[int]:
    counts = []
    available = max(0, n - 1)  # train keeps at least one
    for f in fractions:
        k = int(np.floor(f * n + 0.5))
        if k == 0 and n >= len(fractions) + 1:
            k = 1
        k = min(k, available)
        counts.append(k)
        available -= k
    return counts


def stratified_split(strata: Sequence[str], fractions: dict[str, float], seed: int, rest: str = "train") -> np.ndarray:
    """Split name per sample: the held-out ``fractions`` ({"val": 0.1}) per stratum, the rest ``rest``."""
    strata = np.asarray([str(s) for s in strata], dtype=object)
    out = np.full(len(strata), rest, dtype=object)
    names = list(fractions)
    for stratum in sorted(set(strata)):
        members = np.flatnonzero(strata == stratum)
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stratum.encode())]))
        order = members[rng.permutation(len(members))]
        start = 0
        for name, k in zip(names, held_out_counts(len(members), [fractions[n] for n in names])):
            out[order[start:start + k]] = name
            start += k
    return out


def describe(fractions: dict[str, float], seed: int, stratified_by: str, source: str) -> str:
    parts = ", ".join(f"{name} = {f:.0%}" for name, f in fractions.items())
    return (f"{parts} of {source}, stratified by {stratified_by}, split_seed {seed} (at least one sample per "
            "group in each held-out split when the group has enough samples; see fairbench.data.splitting)")


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """Drawn splits need room for a training split."""
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be below 1")
