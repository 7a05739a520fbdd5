"""Model selection rules (after DomainBed's ``SelectionMethod``): one object per rule, used for
the checkpoint within a run and for the trial within a search, so a table applies one rule to
every row and says which in its title.

A rule scores one evaluation report (the metrics of one checkpoint on one split) and says which
split it reads. Rules that read group labels on validation mark the method's needs with "+V";
the test-oracle rule reads the test split and gives an upper bound, never a result.

Third-party rules register through the ``fairbench.selection_rules`` entry-point group::

    @register_selection_rule("my_rule")
    class MyRule(SelectionRule): ...
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from fairbench.registry import register_selection_rule, selection_rules


class SelectionRule:
    """Subclass and set the class attributes; ``score`` is higher-is-better."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # how a table's title names it
    summary: ClassVar[str] = ""
    split: ClassVar[str] = "val"  # the split whose metrics it reads
    reads_val_groups: ClassVar[bool] = False  # needs group labels on validation ("+V")
    is_oracle: ClassVar[bool] = False  # reads test labels: an upper bound, never a result

    @classmethod
    def score(cls, report: dict[str, Any], epoch: int) -> float:
        raise NotImplementedError


def _metric_score(report: dict[str, Any], key: str) -> float:
    value = report.get(key)
    return float("-inf") if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@register_selection_rule("accuracy")
class ValidationAccuracy(SelectionRule):
    title = "selected by validation accuracy"
    summary = "highest validation accuracy (no group labels outside the method's own needs)"

    @classmethod
    def score(cls, report, epoch):
        return _metric_score(report, "accuracy")


@register_selection_rule("worst_group_accuracy")
class ValidationWorstGroup(SelectionRule):
    title = "selected by validation worst-group accuracy (+V)"
    summary = "highest validation worst-group accuracy (reads group labels on validation: +V)"
    reads_val_groups = True

    @classmethod
    def score(cls, report, epoch):
        return _metric_score(report, "worst_group_accuracy")


@register_selection_rule("last")
class LastEpoch(SelectionRule):
    title = "last checkpoint"
    summary = "the last epoch's checkpoint (no selection)"

    @classmethod
    def score(cls, report, epoch):
        return float(epoch)


@register_selection_rule("test_oracle")
class TestOracle(SelectionRule):
    title = "test-oracle selection: an upper bound, not a result"
    summary = "highest test worst-group accuracy: reads test labels, an upper bound only"
    split = "test"
    reads_val_groups = True
    is_oracle = True

    @classmethod
    def score(cls, report, epoch):
        return _metric_score(report, "worst_group_accuracy")


def get_rule(name: str) -> type[SelectionRule]:
    return selection_rules.get(name)


def checkpoint_rules() -> list[str]:
    """Rules a run may select its checkpoint with: every rule that reads validation only."""
    return [n for n, rule in selection_rules.items() if not rule.is_oracle]
