"""Reweighting (Wang et al. CVPR 2020): per-sample loss weights that balance groups within each class.

Weights, computed once from the training split's targets and intersectional group codes::

    raw_i = N_y / (D * N_{y,d})          for sample i in cell (y, d)
    w_i   = raw_i / mean_j(raw_j)        (mean weight over the training set = 1)

with ``N_y`` the training count of class ``y``, ``N_{y,d}`` the count of cell (y, d) and
``D`` the number of intersectional groups (``len(ctx.group_names)``: the vocabulary over all
splits). Within a class every non-empty cell then carries the same total mass. When all
``D`` cells of every class are populated, ``sum_i raw_i = N`` and the renormalisation is
the identity; when class ``y`` populates only ``D_y < D`` cells its mass before
renormalisation is ``N_y * D_y / D`` (the formula as published, not rescaled per class).

Loss on a batch of size B: ``(1 / B) * sum_i w_i * CE_i`` (weights looked up with
``batch.index``), an unbiased estimate of the weighted training risk, on the same scale
as ERM's loss because the weights have mean 1. Group-balanced sampling is the same mechanism
with other weights, put on the sampler (:mod:`fairbench.methods.cell_weighting`).
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
