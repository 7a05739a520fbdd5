"""GroupDRO (Sagawa et al. ICLR 2020): minimise the q-weighted group losses, q updated online.

Groups are the (target, group) cells by default (``groups="cells"``, as in the paper) or the
demographic groups alone. Per batch, q is raised exponentially for groups with a high loss (plus
the paper's adjustment ``C / sqrt(n_g)``), then the loss is the q-weighted sum. q is a buffer, so
it survives a resume; sampling is group-balanced by default. The update rule, the paper's l2
penalty and the one deviation (groups absent from a batch): docs/methods.md#groupdro
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from fairbench.distributed import global_sum
from fairbench.methods.base import Batch, MethodContext, TrainerView, accuracy_of
from fairbench.methods.erm import ERM, ERMHparams
from fairbench.methods.group_balanced import balanced_sampling_weights, cell_codes
from fairbench.registry import register_method
from fairbench.search_spaces import IntUniform, LogUniform, searched


def group_mean_losses(losses: torch.Tensor, codes: torch.Tensor, num_units: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss per group, with 0 for absent groups; per-group count in the batch).

    In a run split over processes the batch is the global one: sums and counts over the ranks."""
    zeros = torch.zeros(num_units, dtype=losses.dtype, device=losses.device)
    # one collective for both (a per-batch call): stacked, then split
    sums, counts = global_sum(torch.stack([zeros.index_add(0, codes, losses),
                                           zeros.index_add(0, codes, torch.ones_like(losses))]))
    return sums / counts.clamp(min=1), counts


def update_group_weights(q: torch.Tensor, group_loss: torch.Tensor, present: torch.Tensor, eta: float) -> torch.Tensor:
    """Exponentiated-gradient step: ``q_g * exp(eta * L_g)`` for present groups, then renormalise."""
    step = torch.where(present, eta * group_loss.detach(), torch.zeros_like(group_loss))
    q = q * torch.exp(step)
    return q / q.sum()


class GroupDROHparams(ERMHparams):
    eta: float = Field(0.01, gt=0, description="step size of the group weights q (Sagawa et al.: 0.01)",
                      json_schema_extra=searched(LogUniform(1e-3, 1e-1)))
    groups: Literal["cells", "groups"] = Field(
        "cells", description="DRO groups: (target, group) cells as in the paper, or demographic groups only")
    balanced_sampling: bool = Field(True, description="draw every DRO group with equal probability (paper: on)")
    generalization_adjustment: float = Field(
        0.0, ge=0, description="C of the paper's C / sqrt(n_g) adjustment to group losses (0 = plain GroupDRO)",
        json_schema_extra=searched(IntUniform(0, 5)))


@register_method("groupdro")
class GroupDRO(ERM):
    summary = ("GroupDRO: online worst-group weights q over (target, group) cells, balanced sampling "
               "(Sagawa et al. ICLR 2020)")
    uses_train_groups = True
    default_selection = "worst_group_accuracy"
    Hparams = GroupDROHparams

    def __init__(self, ctx: MethodContext, hparams: GroupDROHparams):
        super().__init__(ctx, hparams)
        self.num_units = ctx.num_groups * (ctx.num_classes if hparams.groups == "cells" else 1)
        codes = self._codes_np(ctx.train_targets, ctx.train_groups)
        counts = np.bincount(codes, minlength=self.num_units).astype(np.float64)
        q0 = (counts > 0) / max(1, int((counts > 0).sum()))
        self.register_buffer("q", torch.as_tensor(q0, dtype=torch.float32))
        adjust = hparams.generalization_adjustment / np.sqrt(np.maximum(counts, 1))
        self.register_buffer("adjustment", torch.as_tensor(adjust, dtype=torch.float32), persistent=False)
        self._weights = balanced_sampling_weights(codes)

    def _codes_np(self, targets: np.ndarray, groups: np.ndarray) -> np.ndarray:
        if self.hparams.groups == "cells":
            return cell_codes(targets, groups, self.ctx.num_groups)
        return np.asarray(groups, dtype=np.int64)

    def unit_codes(self, batch: Batch) -> torch.Tensor:
        if self.hparams.groups == "cells":
            return batch.y * self.ctx.num_groups + batch.group
        return batch.group

    def begin_epoch(self, epoch: int, trainer: TrainerView) -> np.ndarray | None:
        super().begin_epoch(epoch, trainer)  # cosine learning rate
        return self._weights if self.hparams.balanced_sampling else None

    def objective(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Updates ``q`` in place from this batch; returns (robust loss, per-group mean losses)."""
        losses = self.loss(logits.float(), batch.y, reduction="none")
        group_loss, counts = group_mean_losses(losses, self.unit_codes(batch), self.num_units)
        present = counts > 0
        q = update_group_weights(self.q, group_loss + self.adjustment, present, self.hparams.eta)
        self.q.copy_(q)
        return (q * group_loss).sum(), group_loss

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.net(batch.x)
        loss, group_loss = self.objective(logits, batch)
        self.step(self.optimizer, loss)
        return {"loss": loss.detach(), "worst_group_loss": group_loss.detach().max(),
                "acc": accuracy_of(logits.detach(), batch.y)}
