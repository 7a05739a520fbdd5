"""ERM with the focal loss (Lin et al., ICCV 2017), as a third-party fairbench method.

Everything a plugin needs: a typed hyperparameter model, the Method contract
(``update`` / ``predict``), and the ``register_method`` decorator whose name matches the
entry point declared in this package's pyproject.toml.
"""

import torch
import torch.nn.functional as F
from pydantic import Field

from fairbench.methods.base import Batch, Hparams, Method, MethodContext, accuracy_of
from fairbench.methods.erm import ClassifierNet
from fairbench.registry import register_method


class FocalHparams(Hparams):
    gamma: float = Field(2.0, ge=0, description="focusing parameter: 0 is plain cross-entropy")


@register_method("focal")
class FocalLoss(Method):
    summary = "example plugin: ERM with the focal loss (Lin et al. 2017)"
    Hparams = FocalHparams

    def __init__(self, ctx: MethodContext, hparams: FocalHparams):
        super().__init__(ctx, hparams)
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_classes)
        self.optimizer = self.make_sgd(self.net.backbone)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.net(batch.x)
        log_p = F.log_softmax(logits.float(), 1).gather(1, batch.y[:, None])[:, 0]
        loss = (-(1 - log_p.exp()) ** self.hparams.gamma * log_p).mean()
        self.step(self.optimizer, loss)
        return {"loss": loss.detach(), "acc": accuracy_of(logits.detach(), batch.y)}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
