"""The resumable training state (``last.pt``): enough to continue a run mid-epoch exactly.

Written at the end of every epoch and, with ``train.checkpoint_every_steps = N``, after
every N training steps (one step = one training batch, i.e. one ``Method.update``; FineFACE
runs N + 2 optimizer steps inside it). It holds:

- the method's ``state_dict`` (weights, buffers such as GroupDRO's q or JTT's error set,
  and anything a method keeps through ``nn.Module.get_extra_state``) and every optimizer's
  state (including the learning rate of each group: the per-epoch cosine schedule lives
  there, there are no separate scheduler objects; bf16 autocast needs no loss scaler);
- every random state: Python's, NumPy's global one, torch's CPU and CUDA generators, the
  batch sampler's generator and the augmentation generator;
- the data order's position: the epoch's batches (the indices, so sampling weights need
  not be recomputed) and the number of steps done, plus the running sums of the logged
  losses;
- the history, and the best validation epoch so far with its report (of the run's own rule and
  of every other validation rule, :mod:`fairbench.rule_checkpoints`).

Resuming loads it into a freshly built method, replays the epoch's ``begin_epoch`` (so
state that a method keeps outside tensors is re-established) and loads it again, then
continues with the next step: on the CPU in deterministic mode the run ends with the
same metrics and predictions, bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 2


def rng_states() -> dict[str, Any]:
    """Python's, NumPy's global, torch's CPU and every CUDA device's random state."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {**np_state["state"], "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64))}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = states["numpy"]
    np.random.set_state({**np_state, "state": {**np_state["state"], "key": np_state["state"]["key"].numpy().astype(np.uint32)}})
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def json_safe(obj: Any) -> Any:
    """Plain Python values (numpy scalars -> floats / ints), loadable with ``weights_only=True``."""
    from fairbench.run_store import _json_default

    return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))


@dataclass
class Position:
    """Where a run stands: epoch ``epoch`` has ``step`` of its batches done (``batches`` None:
    nothing of that epoch has started, begin it normally)."""

    epoch: int = 0
    step: int = 0
    batches: list[np.ndarray] | None = None
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"score": float("-inf"), "epoch": None, "report": None})
    #: the best epoch of every other validation rule (fairbench.rule_checkpoints); None: not followed
    rule_bests: dict[str, Any] | None = None


def training_state(method: Any, position: Position, sampler_rng: np.random.Generator,
                   aug_gen: torch.Generator) -> dict[str, Any]:
    """Everything ``last.pt`` holds (tensors and plain values only)."""
    mid_epoch = position.batches is not None
    return {
        "format": FORMAT,
        "model": method.state_dict(),
        "optimizers": method.optimizer_state(),
        "epoch": position.epoch,
        "step": position.step if mid_epoch else None,
        "batches": torch.from_numpy(np.stack(position.batches)) if mid_epoch else None,
        "sums": {k: torch.as_tensor(v).detach().cpu() for k, v in position.sums.items()} if mid_epoch else {},
        "history": json_safe(position.history),
        "best": json_safe(position.best),
        "rule_bests": json_safe(position.rule_bests),
        "rng": rng_states(),
        "sampler_rng": sampler_rng.bit_generator.state,
        "aug_gen": aug_gen.get_state(),
    }


def load_training_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def restore(state: dict[str, Any], method: Any, sampler_rng: np.random.Generator, aug_gen: torch.Generator) -> Position:
    """Load ``state`` into the method and the generators; returns where to continue.

    An epoch-end state continues with the next epoch; a mid-epoch one with the epoch's next step.
    (States written before mid-epoch checkpoints existed hold no Python / NumPy / CUDA states.)"""
    load_weights(state, method)
    sampler_rng.bit_generator.state = state["sampler_rng"]
    aug_gen.set_state(state["aug_gen"])
    if "rng" in state:
        restore_rng_states(state["rng"])
    else:
        torch.set_rng_state(state["torch_rng"])
    best = {"report": None, **state["best"]}
    rule_bests = state.get("rule_bests")  # None in a state written before rules were followed
    if state.get("step") is None:
        return Position(epoch=state["epoch"] + 1, history=state["history"], best=best, rule_bests=rule_bests)
    batches = list(state["batches"].numpy())
    return Position(epoch=state["epoch"], step=int(state["step"]), batches=batches, sums=dict(state["sums"]),
                    history=state["history"], best=best, rule_bests=rule_bests)


def load_weights(state: dict[str, Any], method: Any) -> None:
    method.load_state_dict(state["model"])
    method.load_optimizer_state(state["optimizers"])
