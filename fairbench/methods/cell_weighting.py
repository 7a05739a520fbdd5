"""ERM with per-sample weights from the training counts of (target, group) cells: the one
mechanism behind ``group_balanced`` and ``reweighting`` (Wang et al., CVPR 2020).

The two differ only in the weight of a cell and where the weights act: group-balanced sampling
draws each epoch's samples with them (``acts_on = "sampler"``), reweighting multiplies each
sample's cross-entropy by them (``acts_on = "loss"``). Each is a subclass that names its weight
function and where it acts; the weights are computed once, when the method is built.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel

from fairbench.methods.base import Batch, MethodContext, TrainerView, accuracy_of
from fairbench.methods.erm import ERM


class CellWeightedERM(ERM):
    """Subclasses set ``cell_weights`` (targets, group codes, number of groups -> N weights) and
    ``acts_on``."""

    uses_train_groups = True
    cell_weights: ClassVar[Callable[[np.ndarray, np.ndarray, int], np.ndarray]]
    acts_on: ClassVar[Literal["sampler", "loss"]]

    def __init__(self, ctx: MethodContext, hparams: BaseModel):
        super().__init__(ctx, hparams)
        weights = type(self).cell_weights(ctx.train_targets, ctx.train_groups, ctx.num_groups)
        self._sampling_weights = weights if self.acts_on == "sampler" else None
        if self.acts_on == "loss":  # derived from the training labels: rebuilt with the method, not checkpointed
            self.register_buffer("sample_weights", torch.as_tensor(weights, dtype=torch.float32), persistent=False)

    def begin_epoch(self, epoch: int, trainer: TrainerView) -> np.ndarray | None:
        super().begin_epoch(epoch, trainer)  # cosine learning rate
        return self._sampling_weights

    def objective(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The batch's mean weighted cross-entropy (``acts_on = "loss"``)."""
        w = self.sample_weights[batch.index]
        return (w * self.loss(logits.float(), batch.y, reduction="none")).mean()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.acts_on == "sampler":
            return super().update(batch)
        logits = self.net(batch.x)
        loss = self.objective(logits, batch)
        self.step(self.optimizer, loss)
        return {"loss": loss.detach(), "acc": accuracy_of(logits.detach(), batch.y)}
