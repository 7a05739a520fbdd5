"""Size and write time of one resumable checkpoint (``last.pt``) of a ResNet-50 method, on this
machine's disk: ``python benchmarks/checkpoint_cost.py`` (CPU; random weights, SGD momentum
buffers as after a step, the batch order of a FairFace-sized epoch)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairbench.evaluation.run_data import load_bundle
from fairbench.evaluation.trained_model import build_method  # noqa: E402
from fairbench.runs import checkpoint  # noqa: E402
from fairbench.runs.store import atomic_torch_save  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

FAIRFACE_BATCHES = 86744 // 16  # one epoch's batch order at the paper's batch size

for method in ("erm", "fineface"):
    cfg = tiny_config(method, sets=["backbone.name=resnet50", "backbone.pretrained=false"])
    model = build_method(cfg, load_bundle(cfg), torch.device("cpu"), steps_per_epoch=8)
    for opt in model.optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    position = checkpoint.Position(0, 1, [np.arange(16)] * FAIRFACE_BATCHES)
    state = checkpoint.training_state(model, position, np.random.default_rng(0), torch.Generator())
    path = Path(tempfile.mkdtemp()) / "last.pt"
    t0 = time.perf_counter()
    atomic_torch_save(path, state)
    seconds = time.perf_counter() - t0
    print(f"{method} (resnet50 backbone): {path.stat().st_size / 1e6:.0f} MB in {seconds:.2f} s")
