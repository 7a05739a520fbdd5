"""The cells of a table: our mean and 95 % t-interval over seeds, the paper's printed number, the
difference between the two, and, for an empty cell, why (from the metric's declared reason).
"""

from __future__ import annotations

from typing import Any

from fairbench.metrics.specs import metric_specs
from fairbench.results.published import PaperTable
from fairbench.results.table import NAN, Cell, finite


def value(report: dict[str, Any], key: str) -> float:
    """A column's number in one report: ``group:<label>`` a group's accuracy, ``metric:<name>`` a metric."""
    kind, _, name = key.partition(":")
    if kind == "group":
        v = (report.get("group_accuracy") or {}).get(name)
    else:
        v = report.get(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else NAN


def why_empty(key: str, reports: list[dict[str, Any]]) -> str:
    """The text of a cell no report defines: a missing run, a missing group, or the metric's reason."""
    missing = [r["_missing"] for r in reports if "_missing" in r]
    if missing:
        return f"n/a: {missing[0]}"
    kind, _, name = key.partition(":")
    if kind == "group":
        if all(name not in (r.get("group_accuracy") or {}) for r in reports):
            return "n/a: no such group in the evaluated data"
        return "n/a: undefined (empty group)"
    if all(name not in r for r in reports):
        return "n/a: not in the report"
    spec = metric_specs().get(name)
    reasons = [spec.why_undefined(r) for r in reports if name in r] if spec else []
    reason = next((x for x in reasons if x), None)
    return f"n/a: undefined ({reason})" if reason else "n/a: undefined"


def ours_cell(reports: dict[int, dict[str, Any]], key: str, digits: int) -> Cell:
    """Mean and 95 % t-interval over seeds of a column ("†": over the seeds where it is defined)."""
    from fairbench.metrics import mean_t_interval

    if not reports:
        return Cell(note="n/a: no run", digits=digits)
    values = [value(r, key) for r in reports.values()]
    mean, half, n = mean_t_interval(values)
    if n == 0:
        return Cell(note=why_empty(key, list(reports.values())), digits=digits)
    return Cell(mean, half, n, digits, flag="†" if n < len(values) else "")


def paper_cell(table: PaperTable, row: dict[str, Any], index: int | None, digits: int) -> Cell:
    if index is None:
        return Cell(note="—: not published", digits=digits)
    text = row["values"][index]
    if text is None:
        return Cell(note=f"—: {row.get('missing', 'not published')}", digits=digits)
    return Cell(float(text), digits=digits, printed=text)


def diff_cell(ours: Cell, paper: Cell, block: str | None = None) -> Cell:
    if block:
        return Cell(note=block, digits=ours.digits)
    if paper.empty:
        return Cell(note=paper.note, digits=ours.digits)
    if not finite(ours.value):
        return Cell(note=ours.note or "n/a: ours undefined", digits=ours.digits)
    return Cell(ours.value - paper.value, digits=ours.digits, signed=True)


