"""Test kit of the in-processing mitigation methods (adversarial, fair_mixup, gap_regularizer,
multitask, consistency): a tiny method context on the CPU and checks of a run's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fairbench.backbones.base import FeatureBackbone
from fairbench.methods.base import Batch, MethodContext, TrainConfigView

#: small generated splits, so that an end-to-end test does not pay for the full benchmark
SMALL_DATA = ["data.options.n_train=256", "data.options.n_val=64", "data.options.n_test=64"]


class TinyBackbone(FeatureBackbone):
    """One conv stage without batch norm: deterministic and fast."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.Tanh())])
        self.stage_channels = [channels]


def tiny_context(*, num_classes: int = 2, num_groups: int = 3, n: int = 24, with_groups: bool = True,
                 seed: int = 0) -> MethodContext:
    rng = np.random.default_rng(seed)
    ctx = MethodContext(
        num_classes=num_classes,
        train=TrainConfigView(epochs=2, batch_size=8, lr=0.1, backbone_lr=0.1, momentum=0.9, weight_decay=5e-4),
        steps_per_epoch=3,
        image_size=8,
        device=torch.device("cpu"),
        make_backbone=TinyBackbone,
        train_targets=rng.integers(0, num_classes, n),
    )
    if with_groups:
        ctx.train_groups = rng.integers(0, num_groups, n)
        ctx.group_names = [f"g{i}" for i in range(num_groups)]
        ctx.train_attributes = {"tone": rng.integers(0, 3, n), "hair": rng.integers(0, 2, n)}
        ctx.attribute_sizes = {"tone": 3, "hair": 2}
    return ctx


def tiny_batch(ctx: MethodContext, b: int = 8, seed: int = 0, with_groups: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, ctx.image_size, ctx.image_size, generator=g)
    y = torch.arange(b) % ctx.num_classes
    batch = Batch(x=x, y=y, index=torch.arange(b))
    if with_groups:
        batch.group = torch.arange(b) % (ctx.num_groups or 1)
        batch.attributes = {"tone": torch.arange(b) % 3, "hair": (torch.arange(b) // 2) % 2}
    return batch


def check_run_outputs(path: Path) -> None:
    """A finished run: one prediction per test image with probabilities, and test metrics."""
    assert json.loads((path / "status.json").read_text())["state"] == "done"
    frame = pd.read_csv(path / "predictions_test.csv")
    meta = json.loads((path / "dataset.json").read_text())
    assert len(frame) == meta["split_sizes"]["test"]
    scores = frame[[c for c in frame.columns if c.startswith("score_")]].to_numpy()
    assert scores.shape[1] == len(meta["classes"])
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(frame["pred"].to_numpy(), scores.argmax(1))
    metrics = json.loads((path / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 100.0  # percent
    assert metrics["test"]["n"] == len(frame)


def check_bf16_update(method, batch: Batch) -> dict:
    """One update under bf16 autocast (the runner uses it on CUDA; the CPU has it too): losses
    come back in float32, finite, and every parameter stays finite."""
    method.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logs = method.update(batch)
    for name, value in logs.items():
        assert value.dtype == torch.float32 and bool(torch.isfinite(value)), name
    assert all(bool(torch.isfinite(p).all()) for p in method.parameters())
    return logs
