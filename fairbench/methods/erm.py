"""ERM baseline: backbone + linear head, cross-entropy on the target only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fairbench.methods.base import Batch, Hparams, Method, MethodContext, accuracy_of
from fairbench.registry import register_method


class ClassifierNet(nn.Module):
    """Backbone + global average pooling + linear head; exposes the last stage for CAMs."""

    def __init__(self, backbone: nn.Module, num_outputs: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def cam(self, x: torch.Tensor, classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class activation maps of the last stage for ``classes`` (default: predicted)."""
        fmap = self.backbone.forward_stages(x)[-1]
        logits = self.head(torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1))
        k = logits.argmax(1) if classes is None else classes
        cam = torch.einsum("bc,bchw->bhw", self.head.weight[k], fmap)
        return cam, logits


class ERMHparams(Hparams):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy label smoothing (0 = none, as published)")


@register_method("erm")
class ERM(Method):
    summary = "ERM baseline: backbone + linear head, cross-entropy on the target"
    Hparams = ERMHparams
    data_parallel = True  # mean cross-entropy (subclasses: per-sample weights, sampling, or global_sum)

    def __init__(self, ctx: MethodContext, hparams: ERMHparams):
        super().__init__(ctx, hparams)
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_classes)
        self.optimizer = self.make_sgd(self.net.backbone)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing, reduction=reduction)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.net(batch.x)
        loss = self.loss(logits, batch.y)
        self.step(self.optimizer, loss)
        return {"loss": loss.detach(), "acc": accuracy_of(logits.detach(), batch.y)}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def attention_maps(self, x: torch.Tensor) -> dict:
        cam, _ = self.net.cam(x)
        cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
        flat = cam.flatten(1)
        lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
        return {"CAM": (cam - lo) / (hi - lo + 1e-6)}
