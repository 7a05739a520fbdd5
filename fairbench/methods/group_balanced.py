"""Group-balanced sampling: every (target, group) cell is drawn with the same probability.

Each epoch the runner draws N training samples with replacement, sample ``i`` with
probability proportional to ``1 / N_{c(i)}``, where ``c(i) = y_i * D + d_i`` is its
(target, intersectional group) cell and ``N_c`` the cell's training count. Every
non-empty cell then receives total mass ``1 / C`` (C = number of non-empty cells); empty
cells receive none. The loss is plain cross-entropy, as in ERM; the cosine learning-rate
schedule of the base class still applies. Reweighting is the same mechanism with other weights,
put on the loss (:mod:`fairbench.methods.cell_weighting`).
"""

from __future__ import annotations

import numpy as np

from fairbench.methods.cell_weighting import CellWeightedERM
from fairbench.methods.erm import ERMHparams
from fairbench.registry import register_method


def cell_codes(targets: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """(target, group) cell of each sample: ``y * D + d``."""
    return np.asarray(targets, dtype=np.int64) * num_groups + np.asarray(groups, dtype=np.int64)


def balanced_sampling_weights(codes: np.ndarray) -> np.ndarray:
    """Per-sample weights ``1 / count(code)``, normalised to sum 1: each present code gets equal mass."""
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes)
    weights = 1.0 / counts[codes]
    return weights / weights.sum()


class GroupBalancedHparams(ERMHparams):
    """ERM's hyperparameters: balancing lives in the sampler, not the loss."""


@register_method("group_balanced")
class GroupBalanced(CellWeightedERM):
    summary = ("Group-balanced sampling: (target, group) cells drawn uniformly, cross-entropy "
               "(the oversampling baseline of Wang et al. CVPR 2020)")
    Hparams = GroupBalancedHparams
    acts_on = "sampler"

    @staticmethod
    def cell_weights(targets: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
        return balanced_sampling_weights(cell_codes(targets, groups, num_groups))
