"""Just Train Twice (Liu et al. ICML 2021): retrain with the first model's training errors upweighted.

Phase 1 (epochs ``0 .. T-1``, ``T = identification_epochs``): plain ERM with its own cosine
learning-rate schedule over those T epochs (an ERM run of T epochs). These epochs are not
selectable.

At the start of epoch T: the phase-1 model predicts the un-augmented training split
(``trainer.predict_train()``); its misclassified samples form the error set. The model is
then re-initialised (a fresh backbone from ``ctx.make_backbone()``, a fresh head) with a
fresh optimizer, and every remaining epoch draws N samples with replacement, an error-set
sample with weight ``upweight`` and any other with weight 1. The cosine schedule restarts
over the remaining ``E - T`` epochs: ``lr0 / 2 * (1 + cos(pi * (epoch - T) / (E - T)))``.

Training reads only the target (``uses_train_groups = False``); checkpoints are selected
by worst-group validation accuracy, as in the paper (needs "T, +V").

Defaults are the paper's CelebA values (Liu et al. 2021, Appendix, CelebA: T = 1,
lambda_up = 50). Deviation: the paper duplicates each error-set sample lambda_up times
(an epoch grows to N + (lambda_up - 1) |E| samples); here an epoch keeps N draws, taken
with replacement with the same relative weights. The error set and the phase flag are
buffers, so a resumed run continues phase 2 without re-identifying.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from fairbench.methods.base import MethodContext, TrainerView
from fairbench.methods.erm import ERM, ClassifierNet, ERMHparams
from fairbench.registry import register_method
from fairbench.search import Choice, IntUniform, searched


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
