"""Comparison tables in the paper's layouts, built from run records (``fairbench compare --layout``).

Layouts
-------
``summary``     (in :mod:`fairbench.layouts.summary`) one row per (method, setting, evaluated
                dataset): the headline metrics.
``groups``      the paper's tables 2-4: accuracy per group of the evaluated dataset, then
                Max/Min, Overall, DoB; one table per (training task, evaluated dataset).
``methods``     table 5: what each method needs in training, accuracy per race (per value of
                ``by``, recomputed from the stored predictions, never by averaging group
                accuracies), Overall, DoB and Max/Min over those groups.
``attributes``  tables 6-7: per seed, the mean over the target attributes of each metric
                (``mean_over_attributes`` of the per-attribute reports), then mean and
                interval over seeds: accuracy, max / min group accuracy, TPR, max / min group
                TPR, DEO, DEOdds.
``min-group``   table 8: minimum group accuracy per target attribute (rows) and method (columns).

Every number of ours is the mean and 95% t-interval half-width over seeds. When the setting is
the paper's (same training dataset and task, evaluated dataset, ResNet-50 at 448 px), the
paper's published rows (``paper_results.json``) appear beside ours with the difference;
``paper=True`` shows them for any recipe, ``paper=False`` never. Every empty cell says why.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable

from fairbench.metrics.specs import get_spec
from fairbench.runs.record import Evaluated, RunRecord

NAN = float("nan")
PAPER_RECIPE = {"backbone.name": "resnet50", "data.image_size": 448}


# -- the metric vocabulary ---------------------------------------------------------------------

LAYOUT_METRICS = {
    "groups": ["max_min_ratio", "accuracy", "dob"],  # the paper's order (tables 2-4)
    "methods": ["accuracy", "dob", "max_min_ratio"],  # table 5
    "attributes": ["accuracy", "max_group_accuracy", "min_group_accuracy", "tpr", "max_group_tpr", "min_group_tpr",
                   "deo", "deodds"],  # tables 6-7
}
#: column titles where the paper's differ from the metric's own
PAPER_TITLES = {("groups", "accuracy"): "Overall", ("methods", "accuracy"): "Overall",
                ("attributes", "max_group_accuracy"): "Max grp acc", ("attributes", "min_group_accuracy"): "Min grp acc",
                ("attributes", "max_group_tpr"): "Max grp TPR", ("attributes", "min_group_tpr"): "Min grp TPR"}
NEEDS_LEGEND = ("needs: T = target labels only; T+A = also the protected attribute in training; "
                "+V = group labels on validation (checkpoint selection)")


# -- needs --------------------------------------------------------------------------------------

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


# -- the paper's numbers ---------------------------------------------------------------------------

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
    data = json.loads(resources.files("fairbench").joinpath("paper_results.json").read_text(encoding="utf-8"))
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
    if not _finite(dob) and len(accs) >= 2:
        undefined.append(f"DoB with ddof={ddof} needs more than {ddof} groups: undefined")
    return {**report, "dob": dob, "ddof": ddof, "undefined": undefined}


def comparison_ddof(papers: list[PaperTable]) -> int | None:
    """The DoB convention of the paper tables shown beside ours (None: none has a DoB column)."""
    found = {t.dob_ddof for t in papers if t.dob_ddof is not None}
    if len(found) > 1:  # not the case for the published tables: tables shown together agree
        raise ValueError(f"paper tables {', '.join(t.id for t in papers)} use different DoB conventions {found}")
    return found.pop() if found else None


def _norm(label: str) -> str:
    return re.sub(r"[^a-z0-9|]", "", str(label).lower())


def paper_tables_for(layout: str, ctx: "Context", by: str | None) -> list[PaperTable]:
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


def _recipe_gap(identity: dict[str, Any]) -> list[str]:
    return [f"{k} {identity.get(k)} (paper: {v})" for k, v in PAPER_RECIPE.items() if identity.get(k) != v]


# -- the table model ----------------------------------------------------------------------------------

@dataclass
class Cell:
    value: float = NAN
    ci95: float = NAN
    n: int = 0
    digits: int = 2
    note: str | None = None  # why the cell is empty
    printed: str | None = None  # the paper's text, as printed
    signed: bool = False  # a difference
    flag: str = ""  # "†": mean over the seeds where defined

    @property
    def empty(self) -> bool:
        return self.printed is None and not _finite(self.value)

    def text(self) -> str:
        if self.printed is not None:
            return self.printed
        if not _finite(self.value):
            return self.note or "n/a"
        fmt = f"{{:{'+' if self.signed else ''}.{self.digits}f}}"
        out = fmt.format(self.value)
        if _finite(self.ci95):
            out += f" ± {self.ci95:.{self.digits}f}"
        return out + self.flag

    def as_json(self) -> dict[str, Any]:
        return {"value": _json_num(self.value if self.printed is None else float(self.printed)),
                "ci95": _json_num(self.ci95), "n": self.n, "text": self.text(),
                "note": self.note if self.empty else None}


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _json_num(x: float) -> float | None:
    return float(x) if _finite(x) else None


@dataclass
class Column:
    key: str  # "group:<label>", "metric:<key>" or, in the min-group layout, "<method label>|<kind>"
    title: str
    digits: int = 2
    source: str = ""  # min-group layout: whose numbers the column holds
    needs: str = ""


@dataclass
class Row:
    kind: str  # "ours" | "paper" | "diff" | "attribute"
    labels: dict[str, str]
    cells: dict[str, Cell]


@dataclass
class Table:
    layout: str
    title: str
    context: dict[str, Any]
    label_titles: list[str]
    columns: list[Column]
    rows: list[Row]
    notes: list[str]


# -- grouping records into contexts and settings ---------------------------------------------------

@dataclass
class Setting:
    """Runs that differ only in seed (and, across target attributes, in target)."""

    key: str
    method: str
    identity: dict[str, Any]
    selection: str | None
    seeds: dict[int, list[Evaluated]] = field(default_factory=dict)
    label: str = ""

    @property
    def targets(self) -> list[str]:
        return sorted({ev.record.target for evs in self.seeds.values() for ev in evs})

    @property
    def matches_paper_recipe(self) -> bool:
        return not _recipe_gap(self.identity)


@dataclass
class Context:
    trained_on: str
    target: str | None  # None: several target attributes pooled
    protected: tuple[str, ...]
    evaluated_on: str
    split: str
    settings: list[Setting] = field(default_factory=list)

    def describe(self) -> str:
        task = f"{self.target} ~ {'+'.join(self.protected)}" if self.target else f"~ {'+'.join(self.protected)}"
        return f"trained on {self.trained_on} ({task}), evaluated on {self.evaluated_on} {self.split}"


def contexts(records: Iterable[RunRecord], *, per_target: bool, dataset: str | None = None) -> list[Context]:
    drop = {"train.seed"} | (set() if per_target else {"data.target"})
    found: dict[tuple, Context] = {}
    for rec in sorted(records, key=lambda r: r.run_id):
        ident = {k: v for k, v in rec.identity.items() if k not in drop}
        skey = json.dumps(ident, sort_keys=True, default=str)
        for ev in rec.evaluations():
            if dataset is not None and ev.dataset != dataset:
                continue
            ckey = (rec.dataset, rec.target if per_target else None, rec.protected, ev.dataset, ev.split)
            ctx = found.setdefault(ckey, Context(*ckey))
            setting = next((s for s in ctx.settings if s.key == skey), None)
            if setting is None:
                setting = Setting(skey, rec.method, ident, rec.config.get("selection"))
                ctx.settings.append(setting)
            setting.seeds.setdefault(rec.seed, []).append(ev)
    ordered = sorted(found.values(), key=lambda c: (c.trained_on, c.target or "", c.protected,
                                                    c.evaluated_on != c.trained_on, c.evaluated_on, c.split))
    for ctx in ordered:
        _label_settings(ctx.settings)
    return ordered


def _label_settings(settings: list[Setting]) -> None:
    """The method name, plus the keys that tell apart settings of the same method."""
    for method in {s.method for s in settings}:
        same = [s for s in settings if s.method == method]
        keys = sorted({k for s in same for k in s.identity}
                      - {k for k in same[0].identity if all(s.identity.get(k) == same[0].identity.get(k) for s in same)})
        for s in same:
            extra = ", ".join(f"{k}={_short(s.identity.get(k))}" for k in keys)
            s.label = f"{method} ({extra})" if extra else method
    settings.sort(key=lambda s: (s.method != "erm", s.label))


def precision_label(setting: Setting) -> str:
    """", bf16" when any seed of the setting trained under bf16 autocast (fp32, the default, and
    unrecorded precisions add nothing)."""
    found = {ev.record.precision for evs in setting.seeds.values() for ev in evs}
    return "" if "bf16" not in found else (", bf16" if found == {"bf16"} else ", bf16 + fp32 seeds")


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.4g}"  # a FLOP budget reads 1.15e+13, not 11500000000000.0
    else:
        text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."


# -- per-seed reports and cells ------------------------------------------------------------------------

def seed_reports(setting: Setting, layout: str, by: str | None) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """One report per seed for the layout, and notes (seeds left out, attributes undefined)."""
    notes: list[str] = []
    out: dict[int, dict[str, Any]] = {}
    if layout == "attributes":
        from fairbench.metrics import mean_over_attributes

        targets = setting.targets
        for seed, evs in sorted(setting.seeds.items()):
            have = {ev.record.target for ev in evs}
            if have != set(targets):
                notes.append(f"{setting.label}: seed {seed} lacks {', '.join(sorted(set(targets) - have))}: left out")
                continue
            reports = [ev.report for ev in sorted(evs, key=lambda e: e.record.target)]
            mean = mean_over_attributes(reports)
            mean["undefined"] = [m for r in reports for m in r.get("undefined", [])]
            mean["_per_attribute"] = {ev.record.target: ev.report for ev in evs}
            out[seed] = mean
        return out, notes
    for seed, evs in sorted(setting.seeds.items()):
        ev = evs[0]
        out[seed] = ev.report_by(by) if (layout == "methods" and by) else ev.report
    return out, notes


def _value(report: dict[str, Any], key: str) -> float:
    kind, _, name = key.partition(":")
    if kind == "group":
        v = (report.get("group_accuracy") or {}).get(name)
    else:
        v = report.get(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else NAN


_UNDEFINED = {  # metric -> (phrase in the report's "undefined" messages, short reason)
    "tpr": [("pooled TPR undefined", "no positives")],
    "max_group_tpr": [("TPR undefined", "no positives in any group")],
    "min_group_tpr": [("TPR undefined", "no positives in any group")],
    "deo": [("DEO undefined", "fewer than 2 groups with positives")],
    "deodds": [("DEO undefined", "fewer than 2 groups with positives"),
               ("FPR gap undefined", "fewer than 2 groups with negatives")],
    "max_min_ratio": [("minimum group accuracy is 0", "min group accuracy 0"),
                      ("fewer than 2 groups", "fewer than 2 groups")],
    "dob": [("fewer than 2 groups", "fewer than 2 groups"), ("DoB with ddof", "too few groups for ddof")],
}


def _why_empty(key: str, reports: list[dict[str, Any]]) -> str:
    missing = [r["_missing"] for r in reports if "_missing" in r]
    if missing:
        return f"n/a: {missing[0]}"
    kind, _, name = key.partition(":")
    if kind == "group":
        if all(name not in (r.get("group_accuracy") or {}) for r in reports):
            return "n/a: no such group in the evaluated data"
        return "n/a: undefined (empty group)"
    messages = [m for r in reports for m in r.get("undefined", [])]
    for phrase, reason in _UNDEFINED.get(name, []):
        if any(phrase in m for m in messages):
            return f"n/a: undefined ({reason})"
    if all(name not in r for r in reports):
        return "n/a: not in the report"
    return "n/a: undefined"


def _ours_cell(reports: dict[int, dict[str, Any]], key: str, digits: int) -> Cell:
    from fairbench.metrics import mean_t_interval

    if not reports:
        return Cell(note="n/a: no run", digits=digits)
    values = [_value(r, key) for r in reports.values()]
    mean, half, n = mean_t_interval(values)
    if n == 0:
        return Cell(note=_why_empty(key, list(reports.values())), digits=digits)
    return Cell(mean, half, n, digits, flag="†" if n < len(values) else "")


def _paper_cell(table: PaperTable, row: dict[str, Any], index: int | None, digits: int) -> Cell:
    if index is None:
        return Cell(note="—: not published", digits=digits)
    text = row["values"][index]
    if text is None:
        return Cell(note=f"—: {row.get('missing', 'not published')}", digits=digits)
    return Cell(float(text), digits=digits, printed=text)


def _diff_cell(ours: Cell, paper: Cell, block: str | None = None) -> Cell:
    if block:
        return Cell(note=block, digits=ours.digits)
    if paper.empty:
        return Cell(note=paper.note, digits=ours.digits)
    if not _finite(ours.value):
        return Cell(note=ours.note or "n/a: ours undefined", digits=ours.digits)
    return Cell(ours.value - paper.value, digits=ours.digits, signed=True)


# -- layouts -----------------------------------------------------------------------------------------

def build_tables(records: list[RunRecord], layout: str, *, paper: bool | None = None, needs: bool | None = None,
                 by: str | None = None, dataset: str | None = None) -> list[Table]:
    """The tables of one layout for finished records (one table per context)."""
    if layout not in ("groups", "methods", "attributes", "min-group"):
        raise ValueError(f"unknown layout {layout!r}; valid: groups, methods, attributes, min-group "
                         "(the summary layout is fairbench.layouts.summary's)")
    per_target = layout in ("groups", "methods")
    show_needs = needs if needs is not None else layout == "methods"
    out = []
    for ctx in contexts(records, per_target=per_target, dataset=dataset):
        if layout == "min-group":
            out.append(_min_group_table(ctx, paper, show_needs))
        else:
            ctx_by = by if by is not None else _default_by(ctx) if layout == "methods" else None
            out.append(_row_table(ctx, layout, paper, show_needs, ctx_by))
    return out


def _default_by(ctx: Context) -> str | None:
    """Table 5: per race when the evaluated data's groups are race x something; else its groups."""
    protected = next(iter(ctx.settings[0].seeds.values()))[0].protected
    return "race" if "race" in protected and len(protected) > 1 else None


def show_paper(ctx: Context, papers: list[PaperTable], paper: bool | None) -> bool:
    if not papers or paper is False:
        return False
    return bool(paper) or any(s.matches_paper_recipe for s in ctx.settings)


def _common_notes(layout: str, reports: list[dict[str, Any]], show_needs: bool) -> list[str]:
    notes = ["mean ± 95% t-interval half-width over seeds (none with a single seed)"]
    if layout in ("groups", "methods"):
        ddofs = sorted({r.get("ddof", 0) for r in reports if "ddof" in r}) or [0]
        notes.append(f"accuracies in %; DoB in pp (std of the group accuracies, ddof {', '.join(map(str, ddofs))}); "
                     "Max/Min = max / min group accuracy (ratio)")
    if layout == "attributes":
        notes.append("per seed, each metric is the mean over the target attributes of its per-attribute value "
                     "(DEO and DEOdds are never recomputed from averaged rates); accuracies and TPRs in %, DEO / DEOdds in pp")
    if show_needs:
        notes.append(NEEDS_LEGEND)
    return notes


def _row_table(ctx: Context, layout: str, paper: bool | None, show_needs: bool, by: str | None) -> Table:
    papers = paper_tables_for(layout, ctx, by)
    show = show_paper(ctx, papers, paper)
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    notes_extra: list[str] = []
    ddof = comparison_ddof(papers) if show else None
    for s in ctx.settings:
        per_seed[s.key], n = seed_reports(s, layout, by)
        if ddof is not None:  # compare like with like: our DoB computed as the paper's table computes its own
            per_seed[s.key] = {seed: with_dob_ddof(r, ddof) for seed, r in per_seed[s.key].items()}
        notes_extra += n
    all_reports = [r for reps in per_seed.values() for r in reps.values()]

    # columns: groups (the paper's order when shown, then ours), then the layout's metrics
    columns: list[Column] = []
    group_alias: dict[str, str] = {}  # paper group label -> our column key
    if layout in ("groups", "methods"):
        ours_groups: list[str] = []
        for r in all_reports:
            for g in (r.get("group_accuracy") or {}):
                if g not in ours_groups:
                    ours_groups.append(g)
        ordered: list[str] = []
        if show:
            for pc in papers[0].columns:
                if "group" not in pc:
                    continue
                names = [pc["group"], *pc.get("aliases", [])]
                match = next((g for g in ours_groups if _norm(g) in {_norm(x) for x in names}), None)
                label = match or pc["group"]
                group_alias[pc["group"]] = f"group:{label}"
                if label not in ordered:
                    ordered.append(label)
        ordered += [g for g in ours_groups if g not in ordered]
        columns += [Column(f"group:{g}", g) for g in ordered]
    for m in LAYOUT_METRICS[layout]:
        columns.append(Column(f"metric:{m}", PAPER_TITLES.get((layout, m), get_spec(m).title), get_spec(m).digits))

    label_titles = ["method"] + (["needs"] if show_needs else []) + ["source"]
    rows: list[Row] = []
    ours_rows: dict[str, Row] = {}
    for s in ctx.settings:
        reps = per_seed[s.key]
        source = f"ours, {len(reps)} seed{'s' if len(reps) != 1 else ''}" + precision_label(s)
        if layout == "attributes":
            source += f", {len(s.targets)} attribute{'s' if len(s.targets) != 1 else ''}"
        labels = {"method": s.label, "needs": method_needs(s.method, s.selection), "source": source}
        ours_rows[s.key] = Row("ours", labels, {c.key: _ours_cell(reps, c.key, c.digits) for c in columns})
        notes_extra += _undefined_attribute_notes(s, reps, layout, columns)
        notes_extra += chance_notes(s.label, reps)

    notes = _common_notes(layout, all_reports, show_needs)
    if ddof is not None:
        kind = "sample standard deviation" if ddof == 1 else "population standard deviation"
        notes.append(f"DoB of every row computed with ddof {ddof} ({kind}), as paper table"
                     f"{'s' if len(papers) > 1 else ''} {', '.join(t.id for t in papers)} computes its own")
    if not show:
        rows = [ours_rows[s.key] for s in ctx.settings]
        if papers and paper is None:
            notes.append(f"paper table {', '.join(t.id for t in papers)} not shown: no row uses the paper's recipe "
                         f"(resnet50, 448 px); --paper shows it anyway")
    else:
        rows = _with_paper_rows(ctx, layout, papers, columns, ours_rows, group_alias, notes)
    if any(c.flag for r in rows for c in r.cells.values()):
        notes.append("† mean over the seeds where the value is defined")
    notes += notes_extra
    title = {"groups": "Accuracy (%) per group", "methods": f"Method comparison, accuracy (%) per {by or 'group'}",
             "attributes": f"Mean over {len({t for s in ctx.settings for t in s.targets})} target attributes"}[layout]
    title += f": {ctx.describe()}" + (f" [paper table{'s' if len(papers) > 1 else ''} {', '.join(t.id for t in papers)}]"
                                      if show else "")
    context = {"trained_on": ctx.trained_on, "target": ctx.target, "protected": list(ctx.protected),
               "evaluated_on": ctx.evaluated_on, "split": ctx.split, "by": by,
               "paper_tables": [t.id for t in papers] if show else []}
    return Table(layout, title, context, label_titles, columns, rows, notes)


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


def _undefined_attribute_notes(s: Setting, reps: dict[int, dict[str, Any]], layout: str, columns: list[Column]) -> list[str]:
    if layout != "attributes":
        return []
    notes = []
    for c in columns:
        bad = sorted({t for r in reps.values() for t, rep in r["_per_attribute"].items() if not _finite(_value(rep, c.key))})
        if bad and any(_finite(_value(r, c.key)) for r in reps.values()):
            why = _why_empty(c.key, [r["_per_attribute"][t] for r in reps.values() for t in bad if t in r["_per_attribute"]])
            reason = re.sub(r"^n/a: (undefined \((.*)\)|(.*))$", lambda m: m.group(2) or m.group(3), why)
            notes.append(f"{s.label}: {c.title} undefined for {', '.join(bad)} ({reason}): mean over the other attributes")
    return notes


def _with_paper_rows(ctx: Context, layout: str, papers: list[PaperTable], columns: list[Column],
                     ours_rows: dict[str, Row], group_alias: dict[str, str], notes: list[str]) -> list[Row]:
    """Slots in the paper's order: the paper's row(s) of a method, then each of our settings of
    that method with its difference to the first paper row; then ours without a paper row."""
    slots: list[tuple[str, list[tuple[PaperTable, dict[str, Any]]]]] = []  # (method or model, rows)
    for t in sorted(papers, key=lambda t: -len(t.rows)):
        for prow in t.rows:
            if prow.get("evaluated_on") not in (None, ctx.evaluated_on):
                continue
            name = prow.get("method") or f"model:{prow['model']}"
            slot = next((sl for sl in slots if sl[0] == name), None)
            if slot is None:
                slots.append((name, []))
                slot = slots[-1]
            slot[1].append((t, prow))
    for _, entries in slots:
        entries.sort(key=lambda e: e[0].id)
    for t in papers:
        notes += [f"paper table {t.id}: {n}" for n in t.notes]
    paper_targets = set(papers[0].setting.get("targets", []))
    rows: list[Row] = []
    used: set[str] = set()
    for name, entries in slots:
        paper_rows: list[Row] = []
        paper_ids: list[list[str]] = []
        for t, prow in entries:
            index = {}
            for i, pc in enumerate(t.columns):
                key = group_alias.get(pc["group"]) if "group" in pc else f"metric:{pc['metric']}"
                index[key] = i
            cells = {c.key: _paper_cell(t, prow, index.get(c.key), c.digits) for c in columns}
            same = next((i for i, r in enumerate(paper_rows) if all(r.cells[k].text() == cells[k].text() for k in cells)), None)
            if same is not None:  # identical in two tables: one row
                paper_ids[same].append(t.id)
                continue
            needs = prow.get("needs") or (method_needs(prow["method"], None) if prow.get("method") else "—: not published")
            paper_rows.append(Row("paper", {"method": prow["model"], "needs": needs}, cells))
            paper_ids.append([t.id])
        for r, ids in zip(paper_rows, paper_ids):
            r.labels["source"] = f"paper, table{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
        rows += paper_rows
        if name.startswith("model:"):
            continue
        for key, orow in ours_rows.items():
            setting = next(s for s in ctx.settings if s.key == key)
            if setting.method != name:
                continue
            used.add(key)
            rows.append(orow)
            ref = paper_rows[0]
            block = None
            if layout == "attributes" and set(setting.targets) != paper_targets:
                block = f"n/a: ours has {len(set(setting.targets) & paper_targets)} of its {len(paper_targets)} attributes"
            gap = _recipe_gap(setting.identity)
            if gap and block is None:
                notes.append(f"{setting.label}: compared with the paper although its recipe differs: {'; '.join(gap)}")
            diff = {c.key: _diff_cell(orow.cells[c.key], ref.cells[c.key], block) for c in columns}
            rows.append(Row("diff", {**orow.labels, "source": f"Δ ours − paper ({ref.labels['source'].removeprefix('paper, ')})"},
                            diff))
    rows += [ours_rows[s.key] for s in ctx.settings if s.key not in used]
    return rows


def _min_group_table(ctx: Context, paper: bool | None, show_needs: bool) -> Table:
    papers = paper_tables_for("min-group", ctx, None)
    show = show_paper(ctx, papers, paper)
    t = papers[0] if show else None
    metric = "min_group_accuracy"
    digits = get_spec(metric).digits
    targets: list[str] = [r["attribute"] for r in t.rows] if t else []
    targets += sorted({x for s in ctx.settings for x in s.targets} - set(targets))
    columns: list[Column] = []
    cells: dict[str, dict[str, Cell]] = {a: {} for a in targets}
    notes = ["mean ± 95% t-interval half-width over seeds (none with a single seed); minimum group accuracy in %"]
    if show_needs:
        notes.append(NEEDS_LEGEND)

    def ours_column(s: Setting) -> Column:
        seeds = len(s.seeds)
        col = Column(f"{s.label}|ours", s.label, digits, f"ours, {seeds} seed{'s' if seeds != 1 else ''}" + precision_label(s),
                     method_needs(s.method, s.selection))
        for a in targets:
            reps = {seed: ev.report for seed, evs in s.seeds.items() for ev in evs if ev.record.target == a}
            cells[a][col.key] = _ours_cell(reps, f"metric:{metric}", digits)
        return col

    used = set()
    if t:
        for j, model in enumerate(t.models):
            pcol = Column(f"{model['model']}|paper", f"{model['model']} (paper)", digits, f"paper, table {t.id}",
                          method_needs(model["method"], None) if model.get("method") else "—: not published")
            rows_by_attr = {r["attribute"]: r for r in t.rows}
            for a in targets:
                prow = rows_by_attr.get(a)
                cells[a][pcol.key] = _paper_cell(t, prow, j, digits) if prow else Cell(note="—: not published", digits=digits)
            columns.append(pcol)
            for s in ctx.settings:
                if s.method != model.get("method"):
                    continue
                used.add(s.key)
                ocol = ours_column(s)
                dcol = Column(f"{s.label}|diff", f"Δ {s.label}", digits, "Δ ours − paper", ocol.needs)
                for a in targets:
                    cells[a][dcol.key] = _diff_cell(cells[a][ocol.key], cells[a][pcol.key])
                columns += [ocol, dcol]
                gap = _recipe_gap(s.identity)
                if gap:
                    notes.append(f"{s.label}: compared with the paper although its recipe differs: {'; '.join(gap)}")
        notes += [f"paper table {t.id}: {n}" for n in t.notes]
    elif papers and paper is None:
        notes.append(f"paper table {papers[0].id} not shown: no run uses the paper's recipe (resnet50, 448 px); "
                     "--paper shows it anyway")
    columns += [ours_column(s) for s in ctx.settings if s.key not in used]
    rows = [Row("attribute", {"attribute": a}, cells[a]) for a in targets]
    if any(c.flag for r in rows for c in r.cells.values()):
        notes.append("† mean over the seeds where the value is defined")
    title = f"Minimum group accuracy (%) per attribute: {ctx.describe()}" + (f" [paper table {t.id}]" if t else "")
    context = {"trained_on": ctx.trained_on, "target": None, "protected": list(ctx.protected),
               "evaluated_on": ctx.evaluated_on, "split": ctx.split, "paper_tables": [t.id] if t else []}
    return Table("min-group", title, context, ["attribute"], columns, rows, notes)


# -- rendering -----------------------------------------------------------------------------------------

FORMATS = ("table", "markdown", "latex", "csv", "json")


def _grid(table: Table) -> tuple[list[str], list[list[str]]]:
    headers = table.label_titles + [c.title for c in table.columns]
    body = [[r.labels.get(t, "") for t in table.label_titles] + [r.cells[c.key].text() for c in table.columns]
            for r in table.rows]
    if table.layout == "min-group":  # whose numbers each column holds (and what they need), as the first rows
        lead = [["source"] + [c.source for c in table.columns]]
        if NEEDS_LEGEND in table.notes:
            lead.append(["needs"] + [c.needs for c in table.columns])
        body = lead + body
    return headers, body


def render(tables: list[Table], fmt: str, skipped: list[tuple[str, str]] | None = None) -> str:
    """Text of the tables in one format: table (terminal), markdown, latex, csv, json."""
    if fmt == "json":
        return json.dumps({"tables": [_table_json(t) for t in tables],
                           "skipped": [{"run_id": r, "reason": why} for r, why in (skipped or [])]},
                          indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(tables)
    from tabulate import tabulate

    parts = []
    for t in tables:
        headers, body = _grid(t)
        if fmt == "latex":
            parts.append(_latex(t, headers, body))
        elif fmt == "markdown":  # a "|" inside a cell (group "White|Male") would split it: escape it
            esc = [[x.replace("|", "\\|") for x in row] for row in [headers, *body]]
            text = tabulate(esc[1:], headers=esc[0], tablefmt="github", disable_numparse=True)
            parts.append(f"### {t.title}\n\n{text}\n\n" + "".join(f"- {n}\n" for n in t.notes))
        elif fmt == "table":
            text = tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True)
            parts.append(f"{t.title}\n\n{text}\n\n" + "".join(f"  * {n}\n" for n in t.notes))
        else:
            raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return "\n".join(parts)


def _table_json(t: Table) -> dict[str, Any]:
    return {
        "layout": t.layout, "title": t.title, "context": t.context,
        "columns": [{"key": c.key, "title": c.title, **({"source": c.source, "needs": c.needs} if c.source else {})}
                    for c in t.columns],
        "rows": [{"kind": r.kind, **r.labels, "cells": {c.title: r.cells[c.key].as_json() for c in t.columns}}
                 for r in t.rows],
        "notes": t.notes,
    }


def _csv(tables: list[Table]) -> str:
    """Long format: one line per cell."""
    label_titles: list[str] = []
    for t in tables:
        label_titles += [x for x in t.label_titles if x not in label_titles]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "layout", "kind", *label_titles, "column", "column_source", "value", "ci95", "n", "text", "note"])
    for i, t in enumerate(tables, 1):
        for r in t.rows:
            for c in t.columns:
                cell = r.cells[c.key].as_json()
                writer.writerow([i, t.layout, r.kind, *[r.labels.get(x, "") for x in label_titles], c.title, c.source,
                                 "" if cell["value"] is None else repr(cell["value"]),
                                 "" if cell["ci95"] is None else repr(cell["ci95"]), cell["n"], cell["text"],
                                 cell["note"] or ""])
    return buf.getvalue()


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "−": r"$-$", "—": "---", "†": r"$^\dagger$", "→": r"$\to$",
                  "←": r"$\leftarrow$", "|": r"$|$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(t: Table, headers: list[str], body: list[list[str]]) -> str:
    n_labels = len(t.label_titles)
    spec = "l" * n_labels + "r" * (len(headers) - n_labels)
    lines = [f"% {t.title}", r"\begin{table}[t]", r"\centering", r"\scriptsize",
             rf"\caption{{{latex_escape(t.title)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        lines.append(r"\par\smallskip\parbox{\linewidth}{\footnotesize " +
                     r" \\ ".join(latex_escape(n) for n in t.notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
