"""Notes under a table that warn a reader: a row at chance (small gaps because it learned nothing),
a metric undefined for some target attributes (a mean over the others).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from fairbench.results.cells import value, why_empty
from fairbench.results.grouping import Setting
from fairbench.results.table import Column, finite


CHANCE_MARGIN_PP = 2.0  # "at chance": accuracy within this many pp of a uniform random guess


def common_num_classes(reports: Iterable[dict[str, Any]]) -> int | None:
    """The number of classes every report (or, for attribute means, every attribute) agrees on;
    None if they differ or one does not say. A uniform random guess scores 100 / K %."""
    classes = set()
    for r in reports:
        per_attribute = r.get("_per_attribute")
        classes.update(one.get("num_classes") for one in (per_attribute.values() if per_attribute else [r]))
    k = classes.pop() if len(classes) == 1 else None
    return k if isinstance(k, int) and k > 1 else None


def at_chance(reports: Iterable[dict[str, Any]]) -> float | None:
    """The random guess's accuracy (100 / K %) if every report scores within the margin of it, else None."""
    reports = list(reports)
    k = common_num_classes(reports)
    accs = [r.get("accuracy") for r in reports]
    if k is None or not accs or not all(isinstance(a, (int, float)) for a in accs):
        return None
    guess = 100.0 / k
    return guess if all(abs(a - guess) <= CHANCE_MARGIN_PP for a in accs) else None


def chance_notes(label: str, reps: dict[int, dict[str, Any]]) -> list[str]:
    """A note for a row whose every seed scores like a random guess: its group gaps are small
    because it learned nothing, which the fairness columns alone would read as fair."""
    guess = at_chance(reps.values())
    if guess is None:
        return []
    return [f"{label}: at chance on every seed (accuracy within {CHANCE_MARGIN_PP:g} pp of a random guess, "
            f"{guess:.0f} %): its small group gaps mean no skill, not fairness"]



def undefined_attribute_notes(s: Setting, reps: dict[int, dict[str, Any]], columns: list[Column]) -> list[str]:
    """A note per column defined for some of a setting's target attributes only (attribute means)."""
    notes = []
    for c in columns:
        bad = sorted({t for r in reps.values() for t, rep in r["_per_attribute"].items() if not finite(value(rep, c.key))})
        if bad and any(finite(value(r, c.key)) for r in reps.values()):
            why = why_empty(c.key, [r["_per_attribute"][t] for r in reps.values() for t in bad if t in r["_per_attribute"]])
            reason = re.sub(r"^n/a: (undefined \((.*)\)|(.*))$", lambda m: m.group(2) or m.group(3), why)
            notes.append(f"{s.label}: {c.title} undefined for {', '.join(bad)} ({reason}): mean over the other attributes")
    return notes
