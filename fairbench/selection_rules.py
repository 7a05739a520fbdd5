"""Model selection rules (after DomainBed's ``SelectionMethod``): one object per rule, used for
the checkpoint within a run and for the trial within a search, so a table applies one rule to
every row and says which in its title.

A rule scores one evaluation report (the metrics of one checkpoint on one split) and says which
split it reads. Within a run it chooses the epoch (:mod:`fairbench.training.rule_checkpoints`);
across a search it chooses the trial, ties broken by :func:`preference` (cheaper model, then lower
trial). Rules that read validation group labels mark the method's needs with "+V"; the test-oracle
rule gives an upper bound, never a result. Plugins: the ``fairbench.selection_rules`` entry points.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from fairbench.registry import register_selection_rule, selection_rules


class SelectionRule:
    """Subclass and set the class attributes; ``score`` is higher-is-better. A rule that keeps the
    highest value of one report metric sets ``metric``; others override ``score``."""

    title: ClassVar[str] = ""  # how a table's title names it
    summary: ClassVar[str] = ""
    split: ClassVar[str] = "val"  # the split whose metrics it reads
    metric: ClassVar[str | None] = None  # the report key it maximises (undefined: never chosen)
    reads_val_groups: ClassVar[bool] = False  # needs group labels on validation ("+V")
    is_oracle: ClassVar[bool] = False  # reads test labels: an upper bound, never a result

    @classmethod
    def score(cls, report: dict[str, Any], epoch: int) -> float:
        if cls.metric is None:
            raise NotImplementedError(f"selection rule {getattr(cls, 'registered_name', cls.__name__)}: "
                                      "set metric or override score")
        value = report.get(cls.metric)
        return float("-inf") if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    @classmethod
    def standard_error(cls, report: dict[str, Any]) -> float:
        """How far the score could move by the luck of the evaluated samples, in its unit: the
        binomial standard error of an accuracy over the samples it counts (all of them; for the
        worst group, that group's). NaN where the rule does not say (``last``, plugins)."""
        from fairbench.metrics.resampling import binomial_standard_error

        if cls.metric == "accuracy":
            return binomial_standard_error(report.get("accuracy"), report.get("n"))
        if cls.metric == "worst_group_accuracy":
            accs = {g: a for g, a in (report.get("group_accuracy") or {}).items() if a is not None and not math.isnan(a)}
            if not accs:
                return float("nan")
            worst = min(accs, key=accs.get)
            return binomial_standard_error(accs[worst], (report.get("group_support") or {}).get(worst, {}).get("n"))
        return float("nan")


@register_selection_rule("accuracy")
class ValidationAccuracy(SelectionRule):
    title = "selected by validation accuracy"
    summary = "highest validation accuracy (no group labels outside the method's own needs)"
    metric = "accuracy"


@register_selection_rule("worst_group_accuracy")
class ValidationWorstGroup(SelectionRule):
    title = "selected by validation worst-group accuracy (+V)"
    summary = "highest validation worst-group accuracy (reads group labels on validation: +V)"
    metric = "worst_group_accuracy"
    reads_val_groups = True


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
    metric = "worst_group_accuracy"
    reads_val_groups = True
    is_oracle = True


def preference(score: float, train_flops: float | None, trial: int | None, run_id: str) -> tuple:
    """Sort key of a candidate (a trial at the epoch a rule chose), the preferred one first: the
    higher score; on a tie the cheaper model (fewer training FLOPs spent up to its epoch; unknown
    counts as the most); then the lower search trial (trial 0 = the defaults; known when the runs
    are read with their suite); then the run id, only so that the order is fixed."""
    score = float("-inf") if score is None or math.isnan(score) else score
    return (-score, math.inf if train_flops is None else float(train_flops),
            math.inf if trial is None else trial, run_id)


def get_rule(name: str) -> type[SelectionRule]:
    return selection_rules.get(name)


def checkpoint_rules() -> list[str]:
    """Rules a run may select its checkpoint with: every rule that reads validation only."""
    return [n for n, rule in selection_rules.items() if not rule.is_oracle]


def check_ranking_rule(name: str) -> None:
    """A rule that ranks trials at a rung: one of the validation split, with a metric the runs'
    histories keep. Raises ValueError naming the fix."""
    try:
        rule = get_rule(name)
    except LookupError as exc:  # names the registered rules
        raise ValueError(str(exc)) from None
    if rule.split != "val":
        raise ValueError(f"rule {name!r} reads the {rule.split} split; halving ranks trials on validation only")
    if rule.metric is None:
        raise ValueError(f"rule {name!r} ranks no metric (every trial would tie); set [search] rule to "
                         "\"accuracy\" or \"worst_group_accuracy\"")
