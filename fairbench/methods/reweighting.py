"""Reweighting (Wang et al. CVPR 2020): per-sample loss weights that balance groups within each class.

The weight of a sample in cell (y, d) is ``N_y / (D * N_{y,d})``, renormalised to mean 1, computed
once from the training split; a batch's loss is the weighted mean cross-entropy, on ERM's scale.
Group-balanced sampling is the same mechanism with other weights, put on the sampler
(:mod:`fairbench.methods.cell_weighting`). Details: docs/methods.md#reweighting
"""

from __future__ import annotations

import numpy as np

from fairbench.methods.cell_weighting import CellWeightedERM
from fairbench.methods.erm import ERMHparams
from fairbench.registry import register_method


def reweighting_weights(targets: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """``w_i = N_y / (D * N_{y,d})`` per training sample, rescaled to mean 1 (float64, N)."""
    targets = np.asarray(targets, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    if len(targets) == 0:
        return np.zeros(0)
    num_classes = int(targets.max()) + 1
    cell = targets * num_groups + groups
    n_cell = np.bincount(cell, minlength=num_classes * num_groups)
    n_class = np.bincount(targets, minlength=num_classes)
    raw = n_class[targets] / (num_groups * n_cell[cell])
    return raw / raw.mean()


class ReweightingHparams(ERMHparams):
    """ERM's hyperparameters: the weights come from the training split, not from tuning."""


@register_method("reweighting")
class Reweighting(CellWeightedERM):
    summary = ("Reweighting: loss weight N_y / (D N_{y,d}) per (target, group) cell, mean 1 "
               "(Wang et al. CVPR 2020)")
    Hparams = ReweightingHparams
    acts_on = "loss"
    cell_weights = staticmethod(reweighting_weights)
