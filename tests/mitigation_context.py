"""A MethodContext for unit tests of the bias-mitigation methods: a tiny backbone, chosen labels."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fairbench.backbones.base import FeatureBackbone
from fairbench.methods.base import Batch, MethodContext, TrainConfigView


class TinyBackbone(FeatureBackbone):
    """One 3x3 convolution stage with 4 channels."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())])
        self.stage_channels = [4]


def make_context(targets, groups=None, *, num_classes: int = 2, num_groups: int | None = None,
                 epochs: int = 4, lr: float = 0.1) -> MethodContext:
    targets = np.asarray(targets, dtype=np.int64)
    ctx = MethodContext(
        num_classes=num_classes,
        train=TrainConfigView(epochs=epochs, batch_size=4, lr=lr, backbone_lr=lr, momentum=0.9, weight_decay=0.0),
        steps_per_epoch=1,
        image_size=8,
        device=torch.device("cpu"),
        make_backbone=TinyBackbone,
        train_targets=targets,
    )
    if groups is not None:
        ctx.train_groups = np.asarray(groups, dtype=np.int64)
        d = num_groups if num_groups is not None else int(ctx.train_groups.max()) + 1
        ctx.group_names = [f"g{i}" for i in range(d)]
    return ctx


def make_batch(index, targets, groups=None) -> Batch:
    """A batch of random 8x8 images for the given training indices."""
    index = torch.as_tensor(index, dtype=torch.int64)
    return Batch(
        x=torch.randn(len(index), 3, 8, 8),
        y=torch.as_tensor(np.asarray(targets)[index.numpy()], dtype=torch.int64),
        index=index,
        group=None if groups is None else torch.as_tensor(np.asarray(groups)[index.numpy()], dtype=torch.int64),
    )
