"""The test kit: what tests of methods and datasets build on, in one place.

Methods: a tiny CPU backbone (:class:`TinyBackbone`), method contexts and batches with chosen
labels (:func:`make_context` / :func:`make_batch` for hand-computed cases, :func:`tiny_context` /
:func:`tiny_batch` with attributes and groups), checks of a finished run's outputs and of a bf16
update. Datasets: face-like JPEGs, damaged files and the :class:`DatasetFixture` record that each
dataset's ``write_fixture(root)`` (in ``tests/data/test_NAME.py``) returns to the registry
contract test (``tests/test_registry_contracts.py``), which finds it by the dataset's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from fairbench.backbones.base import FeatureBackbone
from fairbench.data.base import Task
from fairbench.methods.base import Batch, MethodContext, TrainConfigView

#: small generated splits, so that an end-to-end test does not pay for the full benchmark
SMALL_DATA = ["data.options.n_train=256", "data.options.n_val=64", "data.options.n_test=64"]


# -- methods ------------------------------------------------------------------------------------------


class TinyBackbone(FeatureBackbone):
    """One 3x3 conv stage without batch norm: deterministic and fast."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.Tanh())])
        self.stage_channels = [channels]


def make_context(targets, groups=None, *, num_classes: int = 2, num_groups: int | None = None,
                 epochs: int = 4, lr: float = 0.1) -> MethodContext:
    """A context on 8x8 images whose training targets (and groups) are the given ones."""
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


def tiny_context(*, num_classes: int = 2, num_groups: int = 3, n: int = 24, with_groups: bool = True,
                 seed: int = 0) -> MethodContext:
    """A context with random targets, groups and two attributes (tone, hair) on 8x8 images."""
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


# -- datasets -----------------------------------------------------------------------------------------


@dataclass
class DatasetFixture:
    """What ``write_fixture(root)`` returns: the options and task to load the copy with (None:
    the dataset's default target and protected attributes)."""

    options: dict[str, Any] = field(default_factory=dict)
    task: Task | None = None


def face_images(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` face-like RGB images of ``size`` = (width, height)."""
    try:
        from fairbench.data.synthface import SynthFaceOptions, render_all, sample_split

        lat = sample_split("train", max(n, 1), "smiling", SynthFaceOptions(seed=seed))
        small = render_all(lat, 64)[:n]
    except ImportError:  # the synthetic renderer is optional for these fixtures
        small = np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    return [np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in small]


def write_jpegs(paths: list[Path], size: tuple[int, int], seed: int = 0) -> None:
    for path, pixels in zip(paths, face_images(len(paths), size, seed)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, "JPEG", quality=90)


def truncate_file(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt_file(path: Path) -> None:
    path.write_bytes(b"this is not an image" * 20)
