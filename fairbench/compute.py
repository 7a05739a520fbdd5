"""Where and how torch computes a run: the device (``auto``: CUDA when there is one), the CPU
threads when none are given, bf16 autocast on CUDA, and the seeding of every generator.
Shared by training and prediction (:mod:`fairbench.evaluation.predict`).
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def default_threads() -> int:
    """torch CPU threads when neither ``--threads`` nor ``train.threads`` says: what
    ``OMP_NUM_THREADS`` says if set, else one per core this process may use (its affinity mask),
    less the cores other processes keep busy right now, at least one. torch's own default takes
    every core; beside one busy process on a shared 2-core machine its threads wait for each
    other and a run is many times slower (docs/configuration.md, "Threads")."""
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores - _busy_cores(cores))


def _busy_cores(cores: int) -> int:
    """Cores other processes keep busy: the one-minute load average (before this run adds to it)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
        return 0
    return min(cores, int(load + 0.5))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use --set train.device=cpu")
    return device


def seed_everything(seed: int, deterministic: bool) -> dict[str, int]:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    return {"python": seed, "numpy": seed % 2**32, "torch": seed, "sampler": seed}


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
