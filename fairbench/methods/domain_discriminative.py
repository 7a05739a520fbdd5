"""Domain-discriminative training (Wang et al. CVPR 2020): one softmax over (target, group) pairs.

The head has D x K outputs (group-major, as in the authors' code), trained with cross-entropy on
the joint label. Inference never reads the group: the joint probabilities are marginalised over
groups (sum, or ``combine="max"``), optionally reweighted for a group-balanced test prior
(``prior_shift``, the authors' ``prior_shift_weight``); ``predict`` returns the log score.
Details: docs/methods.md#domain_discriminative
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from fairbench.methods.base import Batch, Hparams, Method, MethodContext, accuracy_of
from fairbench.methods.erm import ClassifierNet
from fairbench.registry import register_method


def joint_labels(y: torch.Tensor, group: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Joint class ``d * K + y``."""
    return group * num_classes + y


def prior_shift_log_weights(targets: np.ndarray, groups: np.ndarray, num_classes: int, num_groups: int) -> np.ndarray:
    """D x K array of ``log(N_y / N_{y,d})`` (``-inf`` for empty cells)."""
    targets = np.asarray(targets, dtype=np.int64)
    n_cell = np.bincount(np.asarray(groups, dtype=np.int64) * num_classes + targets,
                         minlength=num_groups * num_classes).reshape(num_groups, num_classes).astype(np.float64)
    n_class = n_cell.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(n_cell > 0, n_class / np.where(n_cell > 0, n_cell, 1), 0.0)
        return np.log(w)


def marginal_scores(logits: torch.Tensor, num_classes: int, log_weights: torch.Tensor | None = None,
                    combine: str = "sum") -> torch.Tensor:
    """B x K ``log sum_d p(y, d | x) w(y, d)`` (or ``max_d``) from B x (D*K) joint logits."""
    log_p = F.log_softmax(logits.float(), dim=1).view(logits.shape[0], -1, num_classes)
    if log_weights is not None:
        log_p = log_p + log_weights
    if combine == "sum":
        return torch.logsumexp(log_p, dim=1)
    if combine == "max":
        return log_p.max(dim=1).values
    raise ValueError(f"unknown combine rule {combine!r}; choose 'sum' or 'max'")


class DomainDiscriminativeHparams(Hparams):
    prior_shift: bool = Field(
        False, description="reweight p(y, d | x) by 1 / p_train(d | y) before marginalising (paper's prior-shift rule)")
    combine: Literal["sum", "max"] = Field("sum", description="marginalise over groups by sum (paper) or max")


@register_method("domain_discriminative")
class DomainDiscriminative(Method):
    summary = ("Domain-discriminative: softmax over (target, group) pairs, test sums p(y, d|x) over groups, "
               "optional prior shift 1/p(d|y) (Wang et al. CVPR 2020)")
    uses_train_groups = True
    Hparams = DomainDiscriminativeHparams
    data_parallel = True  # mean cross-entropy over (target, group) labels

    def __init__(self, ctx: MethodContext, hparams: DomainDiscriminativeHparams):
        super().__init__(ctx, hparams)
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_groups * ctx.num_classes)
        self.optimizer = self.make_sgd(self.net.backbone)
        log_w = prior_shift_log_weights(ctx.train_targets, ctx.train_groups, ctx.num_classes, ctx.num_groups)
        self.register_buffer("log_weights", torch.as_tensor(log_w, dtype=torch.float32), persistent=False)

    def objective(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits.float(), joint_labels(batch.y, batch.group, self.ctx.num_classes))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        weights = self.log_weights if self.hparams.prior_shift else None
        return marginal_scores(logits, self.ctx.num_classes, weights, self.hparams.combine)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.net(batch.x)
        loss = self.objective(logits, batch)
        self.step(self.optimizer, loss)
        return {"loss": loss.detach(), "acc": accuracy_of(self.scores(logits.detach()), batch.y)}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(self.net(x))
