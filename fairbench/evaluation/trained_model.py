"""A method built from a run's configuration: for training (:func:`build_method`, with the
demographic labels only for methods that declare them), and a finished run's method rebuilt with
its chosen weights from its folder alone (:func:`load_trained_method`, for eval and explain).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairbench import registry
from fairbench.compute import pick_device
from fairbench.config import RunConfig
from fairbench.data.base import DatasetBundle
from fairbench.methods.base import Method, MethodContext, TrainConfigView
from fairbench.runs.checkpoint import load_checkpoint
from fairbench.runs.record import RunRecord
from fairbench.runs.store import read_json


def build_method(cfg: RunConfig, bundle: DatasetBundle, device: torch.device, steps_per_epoch: int) -> Method:
    from fairbench.backbones import create_backbone

    method_cls = registry.methods.get(cfg.method)
    train = bundle.splits["train"]
    pretrained = cfg.backbone.pretrained
    ctx = MethodContext(
        num_classes=len(bundle.classes),
        train=TrainConfigView(cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.backbone_lr,
                              cfg.train.momentum, cfg.train.weight_decay),
        steps_per_epoch=steps_per_epoch,
        image_size=cfg.data.image_size,
        device=device,
        make_backbone=lambda: create_backbone(cfg.backbone.name, pretrained),
        train_targets=train.targets.copy(),
    )
    if method_cls.uses_train_groups:  # demographic labels reach only methods that declare them
        ctx.train_groups = bundle.group_codes("train")
        ctx.group_names = list(bundle.group_names)
        ctx.train_attributes = bundle.attribute_codes("train")
        ctx.attribute_sizes = {c: int(max(v.max() + 1, 1)) for c, v in bundle.attribute_codes("train").items()}
    hparams = method_cls.Hparams.model_validate(cfg.hparams)
    return method_cls(ctx, hparams).to(device)


def load_trained_method(run_dir: Path, device: str = "auto") -> tuple[Method, RunConfig]:
    """Rebuild a finished run's method with its selected weights (for eval / explain)."""
    record = RunRecord(Path(run_dir))
    cfg = RunConfig.model_validate({k: v for k, v in record.config.items() if k != "run_id"})
    dev = pick_device(device)
    meta = read_json(record.path / "dataset.json")
    bundle_stub = _StubBundle(meta)
    # The checkpoint holds every weight: build without fetching pretrained ones (offline machines).
    build_cfg = cfg.model_copy(deep=True)
    build_cfg.backbone.pretrained = False
    method = build_method(build_cfg, bundle_stub, dev, steps_per_epoch=1)  # type: ignore[arg-type]
    state = load_checkpoint(record.path / "checkpoint.pt", dev, "refusing to load",
                            "train the run again (its command with --force)")
    method.load_state_dict(state["model"])
    method.eval()
    return method, cfg


class _StubBundle:
    """Enough of a DatasetBundle to rebuild a method without reloading its training data."""

    def __init__(self, meta: dict[str, Any]):
        self.classes = meta["classes"]
        self.group_names = meta["group_names"]
        n = meta["train_size"]
        self.splits = {"train": _StubSplit(np.asarray(meta["train_targets"], dtype=np.int64))}
        self._groups = np.asarray(meta.get("train_groups") or np.zeros(n), dtype=np.int64)
        self._attributes = {k: np.asarray(v, dtype=np.int64) for k, v in meta.get("train_attributes", {}).items()}

    def group_codes(self, split: str) -> np.ndarray:
        return self._groups

    def attribute_codes(self, split: str) -> dict[str, np.ndarray]:
        return self._attributes


@dataclass
class _StubSplit:
    targets: np.ndarray
