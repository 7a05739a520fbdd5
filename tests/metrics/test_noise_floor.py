"""Noise floor of gap metrics: what a perfectly fair classifier shows by chance on a split."""

from __future__ import annotations

import numpy as np
import pytest

from fairbench.metrics import fairness
from fairbench.metrics.noise_floor import noise_floors, simulate_fair_predictions


def _split(n_per_group: int, groups: int = 8, accuracy: float = 0.99, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_per_group * groups
    y = rng.integers(0, 2, n)
    g = np.repeat(np.arange(groups), n_per_group)
    p = np.where(rng.random(n) < accuracy, y, 1 - y)
    return y, p, g


def test_dob_floor_matches_the_binomial_standard_error():
    # group accuracies ~ Binomial(250, 0.99) / 250: the population std of 8 of them averages about
    # sqrt(7/8) * sd * c4-ish; the sd of one is sqrt(.99 * .01 / 250) = 0.63 pp
    y, p, g = _split(250)
    floor = noise_floors(y, p, g, ("dob",), simulations=400)["dob"]
    sd = 100 * np.sqrt(0.99 * 0.01 / 250)
    assert 0.75 * sd < floor.mean < 1.0 * sd
    assert floor.upper > floor.mean


def test_the_floor_falls_with_larger_groups():
    small = noise_floors(*_split(100), ("dob", "deo"))
    large = noise_floors(*_split(2500), ("dob", "deo"))
    assert large["dob"].mean < small["dob"].mean / 3  # ~ 1 / sqrt(25) = 1/5
    assert large["deo"].mean < small["deo"].mean / 3


def test_a_perfect_classifier_has_no_floor():
    y, _, g = _split(50)
    floors = noise_floors(y, y, g)
    assert all(f.mean == 0 and f.upper == 0 for f in floors.values())


def test_simulated_predictions_keep_the_pooled_confusion_and_ignore_groups():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 3000)
    p = np.where(rng.random(3000) < 0.8, y, (y + 1) % 3)
    sims = simulate_fair_predictions(y, p, np.random.default_rng(2), 50)
    assert sims.shape == (50, 3000) and set(np.unique(sims)) <= {0, 1, 2}
    for c in range(3):
        recall = (sims[:, y == c] == c).mean()
        assert recall == pytest.approx((p[y == c] == c).mean(), abs=0.01)
        assert (sims[:, y == c] == (c + 2) % 3).mean() == 0  # a confusion never observed is never drawn


def test_the_real_metric_code_is_used():
    y, p, g = _split(60, groups=4, accuracy=0.9)
    floors = noise_floors(y, p, g, ("dob", "worst_group_gap"), simulations=30, seed=3)
    sims = simulate_fair_predictions(y, p, np.random.default_rng(3), 30)
    assert floors["dob"].mean == pytest.approx(np.mean([fairness.degree_of_bias(y, s, g) for s in sims]))
    assert floors["worst_group_gap"].mean > 0


def test_unknown_metric():
    y, p, g = _split(10)
    with pytest.raises(ValueError, match=r"no noise floor for \['accuracy'\]"):
        noise_floors(y, p, g, ("accuracy",))
