"""SUBG (Idrissi et al., CLeaR 2022): ERM on a group-balanced random subset of the training split.

Once per run every (target, group) cell is subsampled to the smallest non-empty cell's size, from
a generator seeded by the run's seed; the subset is a buffer, so a resume keeps it. Each epoch
draws N samples from it with replacement (the deviation: ERM's number of steps, a budget-matched
comparison). Details: docs/methods.md#subg
"""

from __future__ import annotations

import numpy as np
import torch

from fairbench.methods.base import MethodContext, TrainerView
from fairbench.methods.erm import ERM, ERMHparams
from fairbench.methods.group_balanced import cell_codes
from fairbench.registry import register_method


def subsample_cells(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask keeping ``min_c N_c`` samples of every non-empty cell, drawn without replacement."""
    codes = np.asarray(codes, dtype=np.int64)
    present, sizes = np.unique(codes, return_counts=True)
    smallest = int(sizes.min())
    keep = np.zeros(len(codes), dtype=bool)
    for c in present:
        keep[rng.choice(np.flatnonzero(codes == c), smallest, replace=False)] = True
    return keep


class SUBGHparams(ERMHparams):
    """ERM's hyperparameters: the balancing is the subset, not the loss."""


@register_method("subg")
class SUBG(ERM):
    summary = ("SUBG: ERM on a random subset with every (target, group) cell cut to the smallest, "
               "drawn once per run (Idrissi et al. CLeaR 2022)")
    uses_train_groups = True
    default_selection = "worst_group_accuracy"
    Hparams = SUBGHparams

    def __init__(self, ctx: MethodContext, hparams: SUBGHparams):
        super().__init__(ctx, hparams)
        codes = cell_codes(ctx.train_targets, ctx.train_groups, ctx.num_groups)
        keep = subsample_cells(codes, np.random.default_rng(torch.initial_seed()))
        self.register_buffer("subset", torch.from_numpy(keep))

    def begin_epoch(self, epoch: int, trainer: TrainerView) -> np.ndarray:
        super().begin_epoch(epoch, trainer)  # cosine learning rate
        return self.subset.cpu().numpy().astype(np.float64)
