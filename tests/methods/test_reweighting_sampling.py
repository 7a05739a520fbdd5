"""Reweighting and group-balanced sampling against hand-computed label tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairbench.methods.group_balanced import GroupBalanced, balanced_sampling_weights, cell_codes
from fairbench.methods.reweighting import Reweighting, reweighting_weights
from tests.kit import make_batch, make_context


def test_reweighting_weights_every_cell_populated():
    # class 0: 3 in group 0, 1 in group 1 (N_0 = 4); class 1: 2 in group 0, 4 in group 1 (N_1 = 6); D = 2
    targets = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    groups = [0, 0, 0, 1, 0, 0, 1, 1, 1, 1]
    # N_y / (D N_{y,d}): 4/6, 4/2, 6/4, 6/8; they sum to N = 10 already, so the mean is 1
    expected = [2 / 3] * 3 + [2.0] + [1.5] * 2 + [0.75] * 4
    np.testing.assert_allclose(reweighting_weights(targets, groups, 2), expected)


def test_reweighting_weights_with_an_empty_cell_are_rescaled_to_mean_one():
    # D = 3; class 0 has groups 0 (x2) and 1 (x1), class 1 has groups 0 and 2 (x1 each)
    targets = [0, 0, 0, 1, 1]
    groups = [0, 0, 1, 0, 2]
    # raw: 3/(3*2) = 0.5, 0.5, 3/(3*1) = 1, 2/(3*1) = 2/3, 2/3; mean 2/3
    np.testing.assert_allclose(reweighting_weights(targets, groups, 3), [0.75, 0.75, 1.5, 1.0, 1.0])


def test_reweighting_loss_looks_weights_up_by_sample_index():
    targets, groups = [0, 0, 0, 1, 1], [0, 0, 1, 0, 2]
    method = Reweighting(make_context(targets, groups, num_groups=3), Reweighting.Hparams())
    batch = make_batch([2, 0], targets, groups)  # weights 1.5 and 0.75, both of class 0
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    # CE = log(sum exp z) - z_y: log 4 and log 4 - log 3
    expected = (1.5 * math.log(4.0) + 0.75 * (math.log(4.0) - math.log(3.0))) / 2
    assert method.objective(logits, batch).item() == pytest.approx(expected, rel=1e-6)
    assert Reweighting.uses_train_groups


def test_group_balanced_gives_each_nonempty_cell_equal_mass():
    # cells (y, d), D = 2: (0,0) x3, (0,1) x1, (1,0) x3, (1,1) empty
    targets = [0, 0, 0, 0, 1, 1, 1]
    groups = [0, 0, 0, 1, 0, 0, 0]
    method = GroupBalanced(make_context(targets, groups, num_groups=2), GroupBalanced.Hparams())
    weights = method.begin_epoch(0, trainer=None)
    np.testing.assert_allclose(weights, [1 / 9, 1 / 9, 1 / 9, 1 / 3, 1 / 9, 1 / 9, 1 / 9])
    cells = cell_codes(targets, groups, 2)
    mass = {c: weights[cells == c].sum() for c in np.unique(cells)}
    assert sorted(mass) == [0, 1, 2]  # the empty cell (1, 1) = code 3 gets nothing
    np.testing.assert_allclose(list(mass.values()), [1 / 3] * 3)


def test_balanced_sampling_weights_ignore_absent_codes():
    np.testing.assert_allclose(balanced_sampling_weights(np.array([5, 5, 2])), [0.25, 0.25, 0.5])


def test_group_balanced_still_applies_the_cosine_schedule():
    targets, groups = [0, 1, 0, 1], [0, 0, 1, 1]
    method = GroupBalanced(make_context(targets, groups, epochs=4, lr=0.1), GroupBalanced.Hparams())
    method.begin_epoch(2, trainer=None)  # 0.1 / 2 * (1 + cos(pi * 2 / 4)) = 0.05
    assert [g["lr"] for g in method.optimizer.param_groups] == pytest.approx([0.05, 0.05])
