"""Control: the constant (majority-class) predictor.

Predicts the most frequent training class for every image and learns nothing else. It belongs
in every comparative table: its group gaps are 0 or near 0 (equal TPR = 0 or 1 everywhere), so
it shows how a fairness column rewards a model with no skill, and its accuracy is the floor that
an accurate method must clear.
"""

from __future__ import annotations

import numpy as np
import torch

from fairbench.methods.base import Batch, Method, MethodContext, NoHparams
from fairbench.registry import register_method


@register_method("constant")
class ConstantPredictor(Method):
    summary = "Control: predicts the training split's majority class for every image (no learning)"
    Hparams = NoHparams
    data_parallel = True  # learns nothing: any split of the batch is the same

    def __init__(self, ctx: MethodContext, hparams: NoHparams):
        super().__init__(ctx, hparams)
        counts = np.bincount(ctx.train_targets, minlength=ctx.num_classes)
        logits = torch.full((ctx.num_classes,), -1.0)
        logits[int(counts.argmax())] = 1.0  # ties: the lowest class index, deterministically
        self.register_buffer("logits", logits.to(ctx.device))

    def begin_epoch(self, epoch, trainer):
        return None  # no optimizer, no schedule

    def update(self, batch: Batch) -> dict[str, float]:
        return {"loss": 0.0}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)
