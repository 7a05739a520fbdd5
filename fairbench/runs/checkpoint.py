"""Checkpoints in a run folder: ``last.pt``, the resumable training state (enough to continue a
run mid-epoch exactly: weights, optimizers, every random state, the epoch's batches and step, the
running loss sums, the history and the best epochs so far), and the checked loading of any
checkpoint (``weights_only=True``; one clear refusal for a foreign or unreadable file).

Resuming loads it into a freshly built method, replays the epoch's ``begin_epoch`` and loads it
again, then continues with the next step: on the CPU in deterministic mode the run ends bit for
bit as one never interrupted. docs/results-files.md ("last.pt") lists what it holds and why.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairbench.runs.lifecycle import RunRefused
from fairbench.runs.store import _json_default

FORMAT = 2
#: the weights of an epoch a validation rule chose (fairbench.training.rule_checkpoints), named from 1
RULE_CHECKPOINT = re.compile(r"checkpoint-epoch(\d+)\.pt")


def checkpoint_file(epoch: int) -> str:
    """The file of a 0-based epoch's weights (named from 1, as the log counts)."""
    return f"checkpoint-epoch{epoch + 1}.pt"


def kept_epochs(folder: Path) -> list[tuple[int, Path]]:
    """(epoch counted from 1, file) of the rule checkpoints in a run folder (a finished run keeps
    them with ``train.keep_rule_checkpoints``), in epoch order."""
    found = [(RULE_CHECKPOINT.fullmatch(p.name), p) for p in Path(folder).glob("checkpoint-epoch*.pt")]
    return sorted((int(m.group(1)), p) for m, p in found if m)


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
    #: the best epoch of every other validation rule (fairbench.training.rule_checkpoints); None: not followed
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


def load_checkpoint(path: Path, map_location: Any, refusal: str, remedy: str) -> Any:
    """``torch.load(weights_only=True)``, with one clear error for a file it refuses or cannot read."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise RunRefused(f"{refusal} {path}: it holds Python objects other than tensors and plain values, which "
                         f"torch.load(weights_only=True) does not run (they could execute code); {remedy}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunRefused(f"{refusal} {path}: not a readable checkpoint ({first}); {remedy}") from None


def load_resume_state(path: Path, rid: str, method: Any) -> dict[str, Any] | None:
    """``last.pt`` of an interrupted run, checked against this run's model; None if there is none."""
    resume = path / "last.pt"
    if not resume.is_file():
        return None
    state = load_checkpoint(resume, "cpu", "refusing to resume from", "delete it to train from the start")
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise RunRefused(f"refusing to resume from {resume}: not a fairbench checkpoint; delete it to train from the start")
    if state.get("run_id", rid) != rid:
        raise RunRefused(f"refusing to resume from {resume}: it belongs to run {state['run_id']}, not {rid}; "
                         "delete it to train from the start")
    try:
        method.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise RunRefused(f"refusing to resume from {resume}: its weights do not fit this configuration's model "
                         f"({first}); it comes from another configuration: delete it to train from the start") from None
    return state
