"""Group-balanced sampling: every (target, group) cell is drawn with the same probability.

Each epoch the runner draws N training samples with replacement, each with probability
proportional to ``1 / N_c`` of its (target, intersectional group) cell, so every non-empty cell
gets the same total mass; the loss is plain cross-entropy, as in ERM. Reweighting is the same
mechanism with other weights, put on the loss (:mod:`fairbench.methods.cell_weighting`).
Details: docs/methods.md#group_balanced
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
