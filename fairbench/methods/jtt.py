"""Just Train Twice (Liu et al. ICML 2021): retrain with the first model's training errors upweighted.

Phase 1 is plain ERM for ``identification_epochs``; its misclassified training samples form the
error set; the model is then rebuilt and every later epoch draws samples with the error set
upweighted by ``upweight``, the cosine schedule restarted. Reads only the target; checkpoints are
selected by worst-group validation accuracy ("T, +V"). The error set and phase are buffers, so a
resume continues phase 2. Schedule, defaults and the deviation from the paper's duplication:
docs/methods.md#jtt
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from fairbench.methods.base import MethodContext, TrainerView
from fairbench.methods.erm import ERM, ClassifierNet, ERMHparams
from fairbench.registry import register_method
from fairbench.search_spaces import Choice, IntUniform, searched


def error_set(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Boolean mask of the training samples the identification model misclassifies."""
    return np.asarray(logits).argmax(1) != np.asarray(targets)


def upweighted_sampling_weights(errors: np.ndarray, upweight: float) -> np.ndarray:
    """``upweight`` for error-set samples, 1 for the others."""
    return np.where(errors, float(upweight), 1.0)


class JTTHparams(ERMHparams):
    identification_epochs: int = Field(
        1, ge=1, description="T: ERM epochs of the identification model (paper, CelebA: 1)",
        json_schema_extra=searched(IntUniform(1, 3)))
    upweight: float = Field(50.0, gt=0, description="lambda_up: sampling weight of the error set (paper, CelebA: 50)",
                            json_schema_extra=searched(Choice((5.0, 10.0, 20.0, 50.0, 100.0))))


@register_method("jtt")
class JTT(ERM):
    summary = ("JTT: ERM for T epochs, then retrain from scratch with its training errors upweighted "
               "(Liu et al. ICML 2021)")
    uses_train_groups = False
    default_selection = "worst_group_accuracy"
    Hparams = JTTHparams

    def __init__(self, ctx: MethodContext, hparams: JTTHparams):
        super().__init__(ctx, hparams)
        if ctx.train.epochs <= hparams.identification_epochs:
            raise ValueError(
                f"jtt needs more epochs ({ctx.train.epochs}) than identification_epochs "
                f"({hparams.identification_epochs}): no epoch of the second phase would be selectable; "
                f"raise --epochs or lower hparams.identification_epochs")
        self.register_buffer("identified", torch.tensor(False))
        self.register_buffer("errors", torch.zeros(len(ctx.train_targets), dtype=torch.bool))

    def _reinitialise(self) -> None:
        self.reset_optimizers()
        self.net = ClassifierNet(self.ctx.make_backbone(), self.ctx.num_classes).to(self.ctx.device)
        self.optimizer = self.make_sgd(self.net.backbone)

    def begin_epoch(self, epoch: int, trainer: TrainerView) -> np.ndarray | None:
        t = self.hparams.identification_epochs
        if epoch < t:
            self.apply_cosine_lr(epoch, start=0, total=t)
            return None
        if not bool(self.identified):
            errors = error_set(trainer.predict_train(), self.ctx.train_targets)
            self._reinitialise()
            self.errors.copy_(torch.from_numpy(errors))
            self.identified.fill_(True)
        self.apply_cosine_lr(epoch, start=t)
        return upweighted_sampling_weights(self.errors.cpu().numpy(), self.hparams.upweight)

    def training_set_passes(self, epochs: int) -> int:
        return 1 if epochs > self.hparams.identification_epochs else 0  # the identification pass

    def is_selectable_epoch(self, epoch: int) -> bool:
        return epoch >= self.hparams.identification_epochs
