"""A training budget (``train.budget_steps`` / ``budget_flops``) turned into epochs before the run
starts: one update of a probe copy of the method is measured, and every generator is put back
afterwards, so the run is exactly the run with those epochs given directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fairbench.compute import autocast
from fairbench.config import RunConfig
from fairbench.cost import epochs_for_budget, probe_prediction_pass, probe_update
from fairbench.data.base import DatasetBundle
from fairbench.evaluation.trained_model import build_method
from fairbench.methods.base import Batch
from fairbench.pipeline import augment_uint8, center_crop_view, to_float
from fairbench.runs import checkpoint


def apply_budget(cfg: RunConfig, bundle: DatasetBundle, device: torch.device,
                 n_batches: int) -> tuple[RunConfig, dict[str, Any] | None]:
    """With ``train.budget_steps`` / ``budget_flops``: the epochs that fit, measured on one update of
    a probe copy of the method (every generator is put back afterwards, so the run is exactly the
    run with those epochs given directly); the configuration with them, and what the budget was."""
    key = next((k for k in ("budget_steps", "budget_flops") if getattr(cfg.train, k) is not None), None)
    if key is None:
        return cfg, None
    generators = checkpoint.rng_states()
    train = bundle.splits["train"]
    provisional = cfg.model_copy(deep=True)
    provisional.train.epochs = 10**6  # only one update is probed; a method may check its phases fit
    probe_method = build_method(provisional, bundle, device, n_batches)
    rows = np.arange(cfg.train.batch_size)

    def first_batch() -> Batch:
        raw = torch.from_numpy(np.ascontiguousarray(train.images[rows])).to(device)
        x = augment_uint8(raw, cfg.train.crop_padding, torch.Generator().manual_seed(0), size=cfg.data.image_size)
        batch = Batch(x=x, y=torch.from_numpy(train.targets[rows]).to(device), index=torch.from_numpy(rows).to(device))
        if probe_method.uses_train_groups:
            batch.group = torch.from_numpy(bundle.group_codes("train")[rows]).to(device)
            batch.attributes = {k: torch.from_numpy(v[rows]).to(device) for k, v in bundle.attribute_codes("train").items()}
        return batch

    with autocast(device, cfg.train.amp):
        per_update = probe_update(probe_method, device, first_batch)
    trains_nothing = not any(p.requires_grad for p in probe_method.parameters())
    pass_flops = 0.0
    if key == "budget_flops" and probe_method.training_set_passes(provisional.train.epochs):
        view = center_crop_view(train.images[rows], cfg.data.image_size)  # predict_train's transform
        x = to_float(torch.from_numpy(np.ascontiguousarray(view)).to(device))
        with autocast(device, cfg.train.amp):
            pass_flops = probe_prediction_pass(probe_method, x, len(train.targets))
    epochs, per_epoch = epochs_for_budget(key, getattr(cfg.train, key), per_update, n_batches, cfg.method,
                                          trains_nothing, pass_flops, probe_method.training_set_passes)
    cfg = cfg.model_copy(deep=True)
    cfg.train.epochs = epochs
    checkpoint.restore_rng_states(generators)
    return cfg, {"key": key, "amount": getattr(cfg.train, key), "epochs": epochs, "per_epoch": per_epoch,
                 "per_update": {"optimizer_steps": per_update.optimizer_steps, "train_flops": per_update.train_flops},
                 **({"training_set_pass_flops": pass_flops} if pass_flops else {})}
