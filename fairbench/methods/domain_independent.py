"""Domain-independent training (Wang et al. CVPR 2020): one classifier head per group, shared backbone.

The head has D x K outputs (group-major, as in the authors' code); each sample trains only its own
group's K logits. Inference never reads the group: ``inference`` picks the paper's rule for
combining the heads (``sum`` of logits, the default; ``sum_prob``; ``max``). Heads of groups with
no training samples are left out. Details: docs/methods.md#domain_independent
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

INFERENCE_RULES = ("sum", "sum_prob", "max")


def own_group_logits(logits: torch.Tensor, group: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B x K: the logits of each sample's own group head, from B x (D*K) outputs."""
    per_group = logits.view(logits.shape[0], -1, num_classes)
    return per_group[torch.arange(logits.shape[0], device=logits.device), group]


def combine_heads(logits: torch.Tensor, num_classes: int, rule: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """B x K class scores (logits or log-probabilities) from B x (D*K) outputs; ``mask`` (D bool) keeps heads."""
    per_group = logits.view(logits.shape[0], -1, num_classes).float()
    if mask is None:
        mask = torch.ones(per_group.shape[1], dtype=torch.bool, device=logits.device)
    keep = mask.view(1, -1, 1)  # masked arithmetic, not indexing: no host synchronisation
    if rule == "sum":
        return (per_group * keep).sum(1)
    log_p = F.log_softmax(per_group, dim=2).masked_fill(~keep, float("-inf"))
    if rule == "sum_prob":
        return torch.logsumexp(log_p, dim=1) - torch.log(mask.sum().float())
    if rule == "max":
        return log_p.max(dim=1).values
    raise ValueError(f"unknown inference rule {rule!r}; choose one of {INFERENCE_RULES}")


class DomainIndependentHparams(Hparams):
    inference: Literal["sum", "sum_prob", "max"] = Field(
        "sum", description="how group heads combine at test: sum of logits (paper), sum or max of probabilities")


@register_method("domain_independent")
class DomainIndependent(Method):
    summary = ("Domain-independent: one head per group, trained on own group; test sums logits over groups "
               "(Wang et al. CVPR 2020)")
    uses_train_groups = True
    Hparams = DomainIndependentHparams
    data_parallel = True  # mean cross-entropy of each sample's own group head

    def __init__(self, ctx: MethodContext, hparams: DomainIndependentHparams):
        super().__init__(ctx, hparams)
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_groups * ctx.num_classes)
        self.optimizer = self.make_sgd(self.net.backbone)
        seen = np.bincount(np.asarray(ctx.train_groups, dtype=np.int64), minlength=ctx.num_groups) > 0
        self.register_buffer("trained_heads", torch.as_tensor(seen), persistent=False)

    def objective(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(own_group_logits(logits.float(), batch.group, self.ctx.num_classes), batch.y)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.net(batch.x)
        loss = self.objective(logits, batch)
        self.step(self.optimizer, loss)
        scores = combine_heads(logits.detach(), self.ctx.num_classes, self.hparams.inference, self.trained_heads)
        return {"loss": loss.detach(), "acc": accuracy_of(scores, batch.y)}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return combine_heads(self.net(x), self.ctx.num_classes, self.hparams.inference, self.trained_heads)
