"""Adversarial debiasing (Zhang, Lemoine & Mitchell, AIES 2018): the classifier learns the target
while defeating an adversary that predicts the group from its logits.

Two modes: the paper's gradient projection (as in AIF360) and gradient reversal (Ganin &
Lempitsky 2015). The adversary has its own Adam optimiser and runs in float32; the classifier's
corrected gradient goes to the harness' SGD instead of the paper's plain step.
Details: docs/methods.md#adversarial
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fairbench import distributed
from fairbench.methods.base import Batch, Hparams, Method, MethodContext, accuracy_of
from fairbench.methods.erm import ERM, ClassifierNet
from fairbench.registry import register_method
from fairbench.search_spaces import LogUniform, searched


def projected_gradients(cls_grads: Sequence[torch.Tensor | None], adv_grads: Sequence[torch.Tensor | None],
                        alpha: float, eps: float = 1e-12) -> list[torch.Tensor | None]:
    """Zhang et al.'s classifier update, per parameter tensor:
    ``g - (g . u) u - alpha * h`` with ``u = h / max(|h|, eps)``, ``g`` = grad L_cls, ``h`` = grad L_adv.

    A tensor the adversary's loss does not reach (``h`` None) keeps ``g``; computed in
    float32 and returned in ``g``'s dtype."""
    out: list[torch.Tensor | None] = []
    for g, h in zip(cls_grads, adv_grads, strict=True):
        if h is None:
            out.append(g)
            continue
        h32 = h.float()
        g32 = torch.zeros_like(h32) if g is None else g.float()
        unit = h32 / h32.norm().clamp_min(eps)
        new = g32 - (g32 * unit).sum() * unit - alpha * h32
        out.append(new.to(h.dtype if g is None else g.dtype))
    return out


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; multiplies the incoming gradient by ``-weight`` backward."""
    return _GradReverse.apply(x, weight)


class LogitAdversary(nn.Module):
    """Predicts the group from class logits (and optionally the true class), in float32."""

    def __init__(self, num_classes: int, num_groups: int, condition_on_target: bool, hidden: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.condition_on_target = condition_on_target
        self.c = nn.Parameter(torch.ones(()))  # the paper's learnable sharpness, AIF360's init 1.0
        width = num_classes * (1 + num_classes) if condition_on_target else num_classes
        if hidden > 0:
            self.body: nn.Module = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_groups))
        else:
            self.body = nn.Linear(width, num_groups)

    def forward(self, logits: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            s = torch.softmax((1 + self.c.abs()) * logits.float(), dim=1)
            if self.condition_on_target:
                if y is None:
                    raise ValueError("this adversary conditions on the target: pass y")
                onehot = F.one_hot(y, self.num_classes).to(s.dtype)
                s = torch.cat([s, (s[:, :, None] * onehot[:, None, :]).flatten(1)], dim=1)
            return self.body(s)


class AdversarialHparams(Hparams):
    mode: Literal["projection", "gradient_reversal"] = Field(
        "projection", description="classifier update: Zhang et al.'s gradient projection, or a gradient-reversal layer")
    alpha: float = Field(0.1, ge=0.0, description="adversary weight alpha (AIF360 default 0.1; spec range 0.1-1)",
                         json_schema_extra=searched(LogUniform(0.01, 1.0)))
    adversary_lr: float = Field(1e-4, gt=0.0, description="learning rate of the adversary's Adam (spec: 1e-4)",
                                json_schema_extra=searched(LogUniform(1e-5, 1e-3)))
    condition_on_target: bool = Field(
        False, description="adversary also sees the true label (paper's equalized-odds variant); false = parity")
    adversary_hidden: int = Field(0, ge=0, description="hidden width of the adversary; 0 = linear, as in the paper")


@register_method("adversarial")
class Adversarial(Method):
    summary = ("Adversarial debiasing (Zhang, Lemoine & Mitchell, AIES 2018): adversary predicts the group "
               "from the class logits; projection or gradient-reversal update")
    uses_train_groups = True
    Hparams = AdversarialHparams
    data_parallel = True  # the projection reads the ranks' mean gradients (see update)
    attention_maps = ERM.attention_maps

    def __init__(self, ctx: MethodContext, hparams: AdversarialHparams):
        super().__init__(ctx, hparams)
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_classes)
        self.optimizer = self.make_sgd(self.net.backbone, extra=list(self.net.head.parameters()))
        self.adversary = LogitAdversary(ctx.num_classes, ctx.num_groups, hparams.condition_on_target,
                                        hparams.adversary_hidden)
        lr = hparams.adversary_lr
        self.adversary_optimizer = torch.optim.Adam(
            [{"params": list(self.adversary.parameters()), "lr": lr, "initial_lr": lr}])
        self.optimizers.append(self.adversary_optimizer)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.group is None:
            raise ValueError("adversarial needs batch.group")
        hp = self.hparams
        logits = self.net(batch.x)
        loss_cls = F.cross_entropy(logits.float(), batch.y)
        adv_in = grad_reverse(logits, hp.alpha) if hp.mode == "gradient_reversal" else logits
        adv_logits = self.adversary(adv_in, batch.y)
        loss_adv = F.cross_entropy(adv_logits, batch.group)
        self.optimizer.zero_grad(set_to_none=True)
        self.adversary_optimizer.zero_grad(set_to_none=True)
        if hp.mode == "gradient_reversal":
            (loss_cls + loss_adv).backward()
        else:
            cls_params = [p for p in self.net.parameters() if p.requires_grad]
            adv_params = [p for p in self.adversary.parameters() if p.requires_grad]
            g_cls = torch.autograd.grad(loss_cls, cls_params, retain_graph=True, allow_unused=True)
            g_all = torch.autograd.grad(loss_adv, cls_params + adv_params, allow_unused=True)
            g_adv, g_own = g_all[: len(cls_params)], g_all[len(cls_params):]
            if distributed.is_distributed():  # the projection is not linear: project the ranks' mean gradients
                g_cls = distributed.average_gradients_(g_cls, cls_params)
                g_adv = distributed.average_gradients_(g_adv, cls_params)
                distributed.mark_averaged(self.optimizer)
            for p, g in zip(cls_params, projected_gradients(g_cls, g_adv, hp.alpha)):
                p.grad = g
            for p, g in zip(adv_params, g_own):
                p.grad = g
        self.optimizer.step()
        self.adversary_optimizer.step()
        return {"loss": loss_cls.detach(), "adv_loss": loss_adv.detach(),
                "acc": accuracy_of(logits.detach(), batch.y), "adv_acc": accuracy_of(adv_logits.detach(), batch.group)}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
