"""Fair Mixup (Chuang & Mroueh, ICLR 2021): regularise the path between groups in input space.

Cross-entropy plus ``lambda`` times the absolute derivative, along ``gamma``, of the mean score of
inputs mixed between two groups (autograd on ``gamma``, ``create_graph=True``), for pairs of groups
drawn in the batch (``variant``: ``dp`` or ``eo``; ``groups``: intersectional or one attribute).
Batch norm takes its statistics from the clean rows only. Deviations from the authors' code
(default ``lambda = 1`` under SGD, the ordinary batch, batch norm) and the exact loss:
docs/methods.md#fair_mixup
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fairbench.methods.base import Batch, Hparams, Method, MethodContext, accuracy_of
from fairbench.methods.erm import ERM, ClassifierNet
from fairbench.registry import register_method
from fairbench.search_spaces import LogUniform, searched


@dataclass
class MixPair:
    """Equal-length index tensors into the batch: ``a`` from one group, ``b`` from another."""

    a: torch.Tensor
    b: torch.Tensor
    classes: tuple[int, ...]  # which class probabilities the regulariser differentiates


def draw_pairs(groups: torch.Tensor, y: torch.Tensor, num_classes: int, variant: str,
               generator: torch.Generator | None = None) -> list[MixPair]:
    """One pair of distinct groups per stratum (the batch for ``dp``, each class for ``eo``).

    Runs on the CPU (the batch's group layout decides the shapes)."""
    groups, y = groups.detach().cpu(), y.detach().cpu()
    if variant == "eo":
        strata = [(torch.nonzero(y == c)[:, 0], (c,)) for c in range(num_classes)]
    else:
        scored = (1,) if num_classes == 2 else tuple(range(num_classes))
        strata = [(torch.arange(len(y)), scored)]
    pairs = []
    for rows, classes in strata:
        present = torch.unique(groups[rows])
        if len(present) < 2:
            continue
        ga, gb = present[torch.randperm(len(present), generator=generator)[:2]]
        ia, ib = rows[groups[rows] == ga], rows[groups[rows] == gb]
        m = max(len(ia), len(ib))
        pairs.append(MixPair(_resample(ia, m, generator), _resample(ib, m, generator), classes))
    return pairs


def _resample(idx: torch.Tensor, m: int, generator: torch.Generator | None) -> torch.Tensor:
    if len(idx) == m:
        return idx[torch.randperm(m, generator=generator)]
    return idx[torch.randint(len(idx), (m,), generator=generator)]


def _bn_forward_with_leading_statistics(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, n: int) -> torch.Tensor:
    out = type(self).forward(self, x[:n])  # the ordinary training-mode pass (and running-stat update) on rows :n
    if len(x) == n:
        return out
    dims = [0, *range(2, x.dim())]
    lead = x[:n].float()
    mean, var = lead.mean(dims, keepdim=True), lead.var(dims, unbiased=False, keepdim=True)
    rest = (x[n:].float() - mean) * torch.rsqrt(var + self.eps)
    if self.affine:
        shape = [1, -1, *([1] * (x.dim() - 2))]
        rest = rest * self.weight.float().view(shape) + self.bias.float().view(shape)
    return torch.cat([out, rest.to(out.dtype)])


@contextlib.contextmanager
def leading_batch_statistics(net: nn.Module, n: int) -> Iterator[None]:
    """Inside the block, every batch-norm layer in training mode takes its batch statistics
    (and updates its running statistics) from the first ``n`` rows only, and normalises the
    other rows with those statistics. The first ``n`` rows then go through exactly the
    ordinary training-mode pass, and every later row is a function of itself alone."""
    patched = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in patched:
        m.forward = types.MethodType(lambda self, x: _bn_forward_with_leading_statistics(self, x, n), m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def mixup_penalty(net: nn.Module, x: torch.Tensor, pairs: list[MixPair], gammas: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Forward the clean batch and every pair's mixed inputs together.

    Returns (clean logits, penalty, per-pair derivatives): ``penalty = sum_pair sum_k
    |d/dgamma mean p_k(gamma x_a + (1 - gamma) x_b)|`` as a float32 scalar with a graph
    (``create_graph=True``), and for every pair a tensor of its ``d/dgamma mean p_k``.
    Batch-norm statistics come from the clean rows (:func:`leading_batch_statistics`)."""
    mixed = [x[p.a] * g + x[p.b] * (1 - g) for p, g in zip(pairs, gammas, strict=True)]
    with leading_batch_statistics(net, len(x)):
        logits = net(torch.cat([x, *mixed]) if mixed else x)
    clean = logits[: len(x)]
    penalty = logits.new_zeros((), dtype=torch.float32)
    derivatives = []
    start = len(x)
    for pair, gamma in zip(pairs, gammas):
        part = logits[start : start + len(pair.a)]
        start += len(pair.a)
        probs = torch.softmax(part.float(), dim=1)
        d = torch.stack([
            torch.autograd.grad(probs[:, k].mean(), gamma, create_graph=True)[0].float().reshape(())
            for k in pair.classes
        ])
        derivatives.append(d)
        penalty = penalty + d.abs().sum()
    return clean, penalty, derivatives


class FairMixupHparams(Hparams):
    lam: float = Field(
        1.0, ge=0.0, description="regulariser weight lambda (spec grid {1, 10, 20, 30}; 1: see the module notes)",
        json_schema_extra=searched(LogUniform(0.1, 30.0)),
    )
    variant: Literal["dp", "eo"] = Field(
        "eo", description="dp: mix between groups unconditionally; eo: within each target class"
    )
    mixup_alpha: float = Field(
        1.0, gt=0.0, description="gamma ~ Beta(alpha, alpha); 1 = U(0, 1) as in the authors' code"
    )
    groups: str = Field(
        "intersectional", description="mix between intersectional groups, or the values of this protected attribute"
    )
    max_grad_norm: float | None = Field(
        None, gt=0.0, description="clip the total gradient norm to this; None: no clipping (not in the paper)"
    )


@register_method("fair_mixup")
class FairMixup(Method):
    summary = ("Fair Mixup (Chuang & Mroueh, ICLR 2021): CE + lambda * |E d/dgamma f(mixup between two groups)|, "
               "DP or EO (within-class) variant")
    uses_train_groups = True
    train_labels = ("groups", "attributes")
    Hparams = FairMixupHparams
    data_parallel = ("it mixes pairs of samples of two groups drawn from the whole batch; split over processes it would "
                     "pair within each shard, a different regulariser")
    same_work_every_update = False  # one mixup pass per pair of groups present in the batch
    attention_maps = ERM.attention_maps

    def __init__(self, ctx: MethodContext, hparams: FairMixupHparams):
        super().__init__(ctx, hparams)
        if hparams.groups != "intersectional" and hparams.groups not in ctx.train_attributes:
            raise ValueError(f"fair_mixup: groups={hparams.groups!r} is neither 'intersectional' nor a protected "
                             f"attribute of this run ({', '.join(ctx.train_attributes)})")
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_classes)
        self.optimizer = self.make_sgd(self.net.backbone)
        concentration = torch.tensor(hparams.mixup_alpha)
        self.gamma_prior = torch.distributions.Beta(concentration, concentration)

    def _groups_of(self, batch: Batch) -> torch.Tensor:
        if self.hparams.groups == "intersectional":
            if batch.group is None:
                raise ValueError("fair_mixup needs batch.group")
            return batch.group
        if batch.attributes is None:
            raise ValueError("fair_mixup needs batch.attributes")
        return batch.attributes[self.hparams.groups]

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        hp = self.hparams
        pairs = draw_pairs(self._groups_of(batch), batch.y, self.ctx.num_classes, hp.variant)
        pairs = [MixPair(p.a.to(batch.x.device), p.b.to(batch.x.device), p.classes) for p in pairs]
        gammas = [self.gamma_prior.sample().to(batch.x.device).requires_grad_(True) for _ in pairs]
        logits, penalty, _ = mixup_penalty(self.net, batch.x, pairs, gammas)
        ce = F.cross_entropy(logits.float(), batch.y)
        loss = ce + hp.lam * penalty
        logs = {"loss": loss.detach(), "ce": ce.detach(), "mixup_reg": penalty.detach(),
                "acc": accuracy_of(logits.detach(), batch.y)}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hp.max_grad_norm is not None:
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.net.parameters(), hp.max_grad_norm)
        self.optimizer.step()
        return logs

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
