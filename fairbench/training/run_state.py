"""What one run being trained holds, shared by the steps of :mod:`fairbench.training.run`: its
configuration, where it is written, what it was built with, and the epoch it is in (for the
status a failure leaves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fairbench import distributed
from fairbench.config import RunConfig
from fairbench.data.base import DatasetBundle
from fairbench.methods.base import Method
from fairbench.runs.lifecycle import Placement
from fairbench.training.run_progress import Reporter
from fairbench.training.timing import PhaseClock


@dataclass
class RunState:
    """One run being trained; filled step by step (prepare, open the folder, train, test)."""

    cfg: RunConfig
    rid: str
    placement: Placement
    reporter: Reporter
    procs: distributed.Processes
    clock: PhaseClock
    device: torch.device = None
    seeds: dict[str, int] = field(default_factory=dict)
    bundle: DatasetBundle = None
    n_batches: int = 0
    budget: dict[str, Any] | None = None
    method: Method = None
    resume_state: dict[str, Any] | None = None
    writer: Any = None  # RunWriter on rank 0, distributed.DiscardWrites on the others (timed either way)
    env: dict[str, Any] = field(default_factory=dict)
    created: bool = False  # the folder did not exist before this run
    t0: float = 0.0
    epoch: int | None = None
