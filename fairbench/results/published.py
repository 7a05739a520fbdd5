"""The FineFACE paper's published tables (``paper_results.json``, tables 2-8) and how they are
matched to our runs: which table belongs to a context, whether the recipe matches the paper's,
the DoB convention each table uses, and what each method needs in training (the paper's legend).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fairbench.results.grouping import Context
from fairbench.results.table import finite

PAPER_RECIPE = {"backbone.name": "resnet50", "data.image_size": 448}
NEEDS_LEGEND = ("needs: T = target labels only; T+A = also the protected attribute in training; "
                "+V = group labels on validation (checkpoint selection)")


def method_needs(method: str, selection: str | None) -> str:
    """The paper's legend for a method (T / T+A, +V) from its registered declaration;
    for a method not installed here, the label the paper prints, else "?"."""
    from fairbench import registry
    from fairbench.methods.base import needs_label

    try:
        return needs_label(registry.methods.get(method), selection)
    except registry.RegistryError:
        for table in paper_tables():
            for row in table.rows:
                if row.get("method") == method and row.get("needs"):
                    return row["needs"]
        return "?"


@dataclass
class PaperTable:
    id: str
    title: str
    layout: str
    setting: dict[str, Any]
    columns: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    notes: list[str]
    by: str | None = None
    metric: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    dob_ddof: int | None = None  # the standard deviation its DoB column uses (None: no DoB column)

    def evaluated_on(self) -> list[str]:
        ev = self.setting["evaluated_on"]
        return ev if isinstance(ev, list) else [ev]


@functools.lru_cache(maxsize=1)
def paper_tables() -> tuple[PaperTable, ...]:
    data = json.loads(resources.files("fairbench.results").joinpath("paper_results.json").read_text(encoding="utf-8"))
    return tuple(PaperTable(t["id"], t["title"], t["layout"], t["setting"], t.get("columns", []), t["rows"],
                            t.get("notes", []), t.get("by"), t.get("metric"), t.get("models", []), t.get("dob_ddof"))
                 for t in data["tables"])


def with_dob_ddof(report: dict[str, Any], ddof: int) -> dict[str, Any]:
    """The report with its DoB recomputed with ``ddof`` from its group accuracies (the groups its
    own DoB used: those not excluded by min_support); the report itself if it already uses it."""
    if report.get("ddof", 0) == ddof or not isinstance(report.get("group_accuracy"), dict):
        return report
    from fairbench.metrics import dob_from_group_accuracies

    excluded = set(report.get("excluded_groups") or [])
    accs = [v for g, v in report["group_accuracy"].items() if g not in excluded]
    dob = dob_from_group_accuracies(accs, ddof=ddof)  # NaN with too few groups
    undefined = list(report.get("undefined") or [])
    if not finite(dob) and len(accs) >= 2:
        undefined.append(f"DoB with ddof={ddof} needs more than {ddof} groups: undefined")
    return {**report, "dob": dob, "ddof": ddof, "undefined": undefined}


def comparison_ddof(papers: list[PaperTable]) -> int | None:
    """The DoB convention of the paper tables shown beside ours (None: none has a DoB column)."""
    found = {t.dob_ddof for t in papers if t.dob_ddof is not None}
    if len(found) > 1:  # not the case for the published tables: tables shown together agree
        raise ValueError(f"paper tables {', '.join(t.id for t in papers)} use different DoB conventions {found}")
    return found.pop() if found else None


def norm_label(label: str) -> str:
    return re.sub(r"[^a-z0-9|]", "", str(label).lower())


def paper_tables_for(layout: str, ctx: Context, by: str | None) -> list[PaperTable]:
    out = []
    for t in paper_tables():
        s = t.setting
        if t.layout != layout or s["trained_on"] != ctx.trained_on or set(s["protected"]) != set(ctx.protected):
            continue
        if ctx.evaluated_on not in t.evaluated_on() or s["split"] != ctx.split:
            continue
        if "target" in s and s["target"] != ctx.target:
            continue
        if t.by is not None and t.by != by:
            continue
        out.append(t)
    return out


def recipe_gap(identity: dict[str, Any]) -> list[str]:
    return [f"{k} {identity.get(k)} (paper: {v})" for k, v in PAPER_RECIPE.items() if identity.get(k) != v]


def show_paper(ctx: Context, papers: list[PaperTable], paper: bool | None) -> bool:
    """Whether a context shows the paper's rows: forced by ``paper``, else when a setting uses its recipe."""
    if not papers or paper is False:
        return False
    return bool(paper) or any(not recipe_gap(s.identity) for s in ctx.settings)
