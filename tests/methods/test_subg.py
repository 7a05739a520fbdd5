"""SUBG: the once-per-run group-balanced subset, checked against hand-counted cells."""

from __future__ import annotations

import numpy as np
import torch

from fairbench.methods.group_balanced import cell_codes
from fairbench.methods.subg import SUBG, subsample_cells
from fairbench.registry import methods
from tests.kit import make_context

# cells (y, d) with D = 2: (0,0) x5, (0,1) x2, (1,0) x4, (1,1) x3 -> every cell cut to 2
TARGETS = [0] * 7 + [1] * 7
GROUPS = [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1]


def test_every_cell_is_cut_to_the_smallest_without_replacement():
    codes = cell_codes(TARGETS, GROUPS, 2)
    keep = subsample_cells(codes, np.random.default_rng(0))
    assert {int(c): int(keep[codes == c].sum()) for c in np.unique(codes)} == {0: 2, 1: 2, 2: 2, 3: 2}
    assert keep[[5, 6]].all()  # the smallest cell is kept whole


def test_empty_cells_are_ignored():
    codes = cell_codes([0, 0, 0, 1, 1], [0, 0, 1, 0, 0], 2)  # cell (1, 1) empty; smallest non-empty: 1
    keep = subsample_cells(codes, np.random.default_rng(1))
    assert keep.sum() == 3 and keep[2]


def test_subset_is_fixed_per_seed_and_weights_only_the_subset():
    def build(seed: int) -> SUBG:
        torch.manual_seed(seed)
        return SUBG(make_context(TARGETS, GROUPS, num_groups=2), SUBG.Hparams())

    a, b = build(3), build(3)
    assert torch.equal(a.subset, b.subset)
    subsets = {tuple(build(s).subset.tolist()) for s in range(8)}
    assert len(subsets) > 1  # the draw follows the seed
    weights = a.begin_epoch(0, trainer=None)
    assert weights.shape == (14,) and set(np.unique(weights)) == {0.0, 1.0}
    np.testing.assert_array_equal(weights > 0, a.subset.numpy())
    assert a.begin_epoch(1, trainer=None).tolist() == weights.tolist()  # once per run, not per epoch
    assert "subset" in a.state_dict()  # restored on resume


def test_registered_and_needs_group_labels():
    assert methods.get("subg") is SUBG
    assert SUBG.uses_train_groups and SUBG.default_selection == "worst_group_accuracy"
