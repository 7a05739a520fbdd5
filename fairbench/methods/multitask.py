"""Multi-task learning (Das, Dantcheva & Bremond, ECCV Workshops 2018): a shared backbone
with one head for the target and one head per protected attribute.

The paper's dynamic loss weighting is unpublished: the heads' losses are combined with fixed
weights (``weighting = "fixed"``) or with learned homoscedastic-uncertainty weights (Kendall, Gal &
Cipolla, CVPR 2018) as a published stand-in. Prediction uses the target head only.
Details: docs/methods.md#multitask
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fairbench.methods.base import Batch, Hparams, Method, MethodContext, accuracy_of
from fairbench.methods.erm import ERM, ClassifierNet
from fairbench.registry import register_method
from fairbench.search_spaces import LogUniform, searched


def multitask_loss(target_logits: torch.Tensor, y: torch.Tensor, attribute_logits: dict[str, torch.Tensor],
                   attribute_labels: dict[str, torch.Tensor], weights: dict[str, float],
                   log_vars: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and the per-task cross-entropies (key ``"target"`` and each attribute), float32.

    Without ``log_vars``: ``CE_target + sum_a weights[a] * CE_a``. With ``log_vars`` (one per
    task, target first, then ``attribute_logits``' order): ``sum_t exp(-s_t) CE_t + s_t / 2``."""
    parts = {"target": F.cross_entropy(target_logits.float(), y)}
    for name, logits in attribute_logits.items():
        parts[name] = F.cross_entropy(logits.float(), attribute_labels[name])
    if log_vars is None:
        total = parts["target"] + sum(weights[name] * parts[name] for name in attribute_logits)
    else:
        losses = torch.stack(list(parts.values()))
        s = log_vars.float()
        total = (torch.exp(-s) * losses + 0.5 * s).sum()
    return total, parts


class MultitaskHparams(Hparams):
    weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed", description="fixed weights, or Kendall et al. (2018) learned uncertainty weights")
    attribute_weight: float = Field(
        1.0, ge=0.0, description="weight w_a of every protected-attribute head's CE (fixed)",
        json_schema_extra=searched(LogUniform(0.1, 10.0)),
    )
    attribute_weights: dict[str, float] = Field(
        {}, description="per-attribute overrides of attribute_weight, e.g. {skin_tone = 0.5}")


@register_method("multitask")
class Multitask(Method):
    summary = ("Multi-task (Das et al., ECCVW 2018): shared backbone, target head + one head per protected attribute; "
               "fixed or Kendall uncertainty weights (the paper's dynamic weighting is unpublished)")
    uses_train_groups = True
    train_labels = ("attributes",)
    Hparams = MultitaskHparams
    data_parallel = True  # weighted sum of per-task mean losses
    attention_maps = ERM.attention_maps

    def __init__(self, ctx: MethodContext, hparams: MultitaskHparams):
        super().__init__(ctx, hparams)
        unknown = sorted(set(hparams.attribute_weights) - set(ctx.attribute_sizes))
        if unknown:
            raise ValueError(f"multitask: attribute_weights names {unknown}, not protected attributes of this run "
                             f"({', '.join(ctx.attribute_sizes)})")
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_classes)
        dim = self.net.backbone.feature_dim
        self.attribute_heads = nn.ModuleDict({a: nn.Linear(dim, n) for a, n in ctx.attribute_sizes.items()})
        self.weights = {a: hparams.attribute_weights.get(a, hparams.attribute_weight) for a in ctx.attribute_sizes}
        heads = list(self.net.head.parameters()) + list(self.attribute_heads.parameters())
        self.optimizer = self.make_sgd(self.net.backbone, extra=heads)
        self.log_vars: nn.Parameter | None = None
        if hparams.weighting == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(1 + len(self.attribute_heads)))
            lr = ctx.train.lr
            self.optimizer.add_param_group({"params": [self.log_vars], "lr": lr, "initial_lr": lr, "weight_decay": 0.0})

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.attributes is None:
            raise ValueError("multitask needs batch.attributes")
        features = self.net.backbone(batch.x)
        logits = self.net.head(features)
        attribute_logits = {a: head(features) for a, head in self.attribute_heads.items()}
        loss, parts = multitask_loss(logits, batch.y, attribute_logits, batch.attributes, self.weights, self.log_vars)
        self.step(self.optimizer, loss)
        logs = {"loss": loss.detach(), "acc": accuracy_of(logits.detach(), batch.y)}
        logs.update({f"ce_{k}": v.detach() for k, v in parts.items()})
        return logs

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
