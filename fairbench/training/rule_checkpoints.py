"""Early stopping as selection: the best epoch of every validation rule within one run.

The run's own rule keeps ``checkpoint.pt``; every other rule that reads validation only
(:func:`fairbench.selection_rules.checkpoint_rules`) is followed too, its best epoch's weights saved as
``checkpoint-epoch<N>.pt`` (one file per epoch; a file no rule points at is deleted). After
training, test is predicted once per chosen epoch other than the run's own
(``predictions_test-epoch<N>.csv``) and those files deleted, unless ``train.keep_rule_checkpoints``
keeps them for cross-dataset evaluations (a suite with [[evaluate]]): the epochs are fixed from
validation first, so test labels never choose. ``metrics.json`` ``rules`` holds the result
(docs/results-files.md); runs recorded before have none and the tables say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairbench.runs.checkpoint import RULE_CHECKPOINT
from fairbench.selection_rules import checkpoint_rules, get_rule


def predictions_split(epoch: int) -> str:
    """The split name of a 0-based epoch's test predictions: ``predictions_<split>.csv``."""
    return f"test-epoch{epoch + 1}"


class RuleBests:
    """The best selectable epoch so far of every validation rule but the run's own.

    ``state`` (from ``last.pt``) continues an interrupted run; ``None`` there means the run was
    started before rules were followed: nothing is followed then (``active`` is False)."""

    def __init__(self, own_rule: str, state: dict[str, Any] | None = None, resumed: bool = False):
        self.active = not (resumed and state is None)
        fresh = {"score": float("-inf"), "epoch": None, "report": None}
        self.bests: dict[str, dict[str, Any]] = {}
        if state is not None:  # the rules followed since the run started, no other
            self.bests = {name: dict(best) for name, best in state.items()}
        elif self.active:
            self.bests = {name: dict(fresh) for name in checkpoint_rules() if name != own_rule}

    def observe(self, epoch: int, report: dict[str, Any], selectable: bool) -> bool:
        """Score one validated epoch under every rule; True if some rule's best is now this epoch
        (its weights must then be saved under :func:`fairbench.runs.checkpoint.checkpoint_file`). Ties keep the earlier,
        cheaper epoch."""
        moved = False
        if not selectable:
            return False
        for name, best in self.bests.items():
            score = get_rule(name).score(report, epoch)
            if best["epoch"] is None or score > best["score"]:
                self.bests[name] = {"score": score, "epoch": epoch, "report": report}
                moved = True
        return moved

    def state(self) -> dict[str, Any] | None:
        return dict(self.bests) if self.active else None

    def epochs(self) -> set[int]:
        return {b["epoch"] for b in self.bests.values() if b["epoch"] is not None}

    def prune(self, folder: Path, finished: bool = False, own_epoch: int | None = None) -> None:
        """Delete the epoch files no rule points at, and ``own_epoch``'s (``checkpoint.pt`` holds
        it); once the run has ``finished`` (test predicted), all of them."""
        wanted = set() if finished else self.epochs() - {own_epoch}
        for path in Path(folder).glob("checkpoint-epoch*.pt"):
            match = RULE_CHECKPOINT.fullmatch(path.name)
            if match and int(match.group(1)) - 1 not in wanted:
                path.unlink(missing_ok=True)
