"""A table layout declared as data (``TableLayout``: its metric columns, more from the metric specs
that ask to be shown in it, a column per group or not, pooled target attributes or not, small
hooks for title, per-seed reports and notes) and ``build_tables``, which reads it and knows no
layout by name: rows are our settings, and the paper's rows beside them when it has that table.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fairbench import registry
from fairbench.metrics.specs import get_spec, view_metrics
from fairbench.results.cells import diff_cell, ours_cell, paper_cell
from fairbench.results.grouping import Context, Setting, contexts, precision_label, seed_reports
from fairbench.results.layouts.base import Layout, LayoutOptions
from fairbench.results.notes import chance_notes
from fairbench.results.published import (NEEDS_LEGEND, PaperTable, comparison_ddof, method_needs, norm_label,
                                         paper_tables_for, recipe_gap, show_paper, with_dob_ddof)
from fairbench.results.render import render
from fairbench.results.table import Column, Row, Table
from fairbench.runs.record import RunRecord


class TableLayout(Layout):
    """A layout of method rows and metric columns, declared as data (see the module docstring)."""

    #: its own metric columns, in order (report keys of registered metrics)
    metrics: ClassVar[tuple[str, ...]] = ()
    #: an accuracy column per group of the evaluated data before the metrics
    group_columns: ClassVar[bool] = False
    #: a table per target attribute (False: a setting's target attributes pooled in one table)
    per_target: ClassVar[bool] = True
    #: the column of what each method needs in training, unless --needs / --no-needs says
    shows_needs: ClassVar[bool] = False
    #: the title before the context it tables
    heading: ClassVar[str] = "Comparison"

    def columns(self, reports: list[dict[str, Any]]) -> list[str]:
        """Its metric columns: its own, then every metric whose spec asks to be shown in it and that
        some of the ``reports`` hold (runs scored before it was declared do not)."""
        return [m for m in view_metrics(self.registered_name, self.metrics)
                if m in self.metrics or any(m in r for r in reports)]

    def title(self, ctx: Context, by: str | None) -> str:
        return self.heading

    def default_by(self, ctx: Context) -> str | None:
        """The protected column whose values are the groups when --by is not given (None: the run's groups)."""
        return None

    def reports(self, setting: Setting, by: str | None) -> tuple[dict[int, dict[str, Any]], list[str]]:
        """A setting's report per seed, and notes on seeds left out."""
        return seed_reports(setting), []

    def source(self, setting: Setting) -> str:
        """What a row's source label adds after its seeds."""
        return ""

    def notes(self, reports: list[dict[str, Any]]) -> list[str]:
        """Notes on units and definitions under each table."""
        return []

    def row_notes(self, setting: Setting, reports: dict[int, dict[str, Any]], columns: list[Column]) -> list[str]:
        return []

    def diff_block(self, setting: Setting, paper_targets: set[str]) -> str | None:
        """Why a row is not compared with the paper's row, if it is not (None: compared)."""
        return None

    def table(self, ctx: Context, paper: bool | None, show_needs: bool, by: str | None) -> Table:
        return row_table(self, ctx, paper, show_needs, by)

    def text(self, done: list[RunRecord], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
        tables = build_tables(done, self, paper=options.paper, needs=options.needs, by=options.by,
                              dataset=options.dataset)
        return render(tables, fmt, skipped=skipped)


def build_tables(records: list[RunRecord], layout: str | TableLayout, *, paper: bool | None = None,
                 needs: bool | None = None, by: str | None = None, dataset: str | None = None) -> list[Table]:
    """The tables of one table layout (a registered name or the layout itself) for finished
    records: one table per context (training task, evaluated dataset and split)."""
    chosen = registry.layouts.get(layout)() if isinstance(layout, str) else layout
    if not callable(getattr(chosen, "table", None)):
        raise ValueError(f"layout {layout!r} does not build tables (it is not a TableLayout): "
                         f"use fairbench.results.reporting.compare_records")
    show_needs = needs if needs is not None else chosen.shows_needs
    return [chosen.table(ctx, paper, show_needs, by if by is not None else chosen.default_by(ctx))
            for ctx in contexts(records, per_target=chosen.per_target, dataset=dataset)]


def row_table(layout: TableLayout, ctx: Context, paper: bool | None, show_needs: bool, by: str | None) -> Table:
    """One context's table: a row per setting (and the paper's rows with our differences when shown)."""
    name = layout.registered_name
    papers = paper_tables_for(name, ctx, by)
    show = show_paper(ctx, papers, paper)
    ddof = comparison_ddof(papers) if show else None  # compare like with like: our DoB as the paper's
    per_seed, notes_extra = _seed_reports(layout, ctx, by, ddof)
    all_reports = [r for reps in per_seed.values() for r in reps.values()]
    group_alias: dict[str, str] = {}  # paper group label -> our column key
    columns = _group_columns(all_reports, papers if show else [], group_alias) if layout.group_columns else []
    for m in layout.columns(all_reports):
        spec = get_spec(m)
        columns.append(Column(f"metric:{m}", spec.title_in(name), spec.digits))
    ours_rows: dict[str, Row] = {}
    for s in ctx.settings:
        reps = per_seed[s.key]
        source = f"ours, {len(reps)} seed{'s' if len(reps) != 1 else ''}" + precision_label(s) + layout.source(s)
        labels = {"method": s.label, "needs": method_needs(s.method, s.selection), "source": source}
        ours_rows[s.key] = Row("ours", labels, {c.key: ours_cell(reps, c.key, c.digits) for c in columns})
        notes_extra += layout.row_notes(s, reps, columns) + chance_notes(s.label, reps)
    notes = ["mean ± 95% t-interval half-width over seeds (none with a single seed)", *layout.notes(all_reports)]
    notes += [NEEDS_LEGEND] if show_needs else []
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
        rows = with_paper_rows(ctx, layout, papers, columns, ours_rows, group_alias, notes)
    if any(c.flag for r in rows for c in r.cells.values()):
        notes.append("† mean over the seeds where the value is defined")
    notes += notes_extra
    title = layout.title(ctx, by) + f": {ctx.describe()}" + (
        f" [paper table{'s' if len(papers) > 1 else ''} {', '.join(t.id for t in papers)}]" if show else "")
    label_titles = ["method"] + (["needs"] if show_needs else []) + ["source"]
    context = {"trained_on": ctx.trained_on, "target": ctx.target, "protected": list(ctx.protected),
               "evaluated_on": ctx.evaluated_on, "split": ctx.split, "by": by,
               "paper_tables": [t.id for t in papers] if show else []}
    return Table(name, title, context, label_titles, columns, rows, notes)


def _seed_reports(layout: TableLayout, ctx: Context, by: str | None,
                  ddof: int | None) -> tuple[dict[str, dict[int, dict[str, Any]]], list[str]]:
    """Each setting's per-seed reports, as the layout reads them, and the notes that come with them;
    with ``ddof``, their DoB recomputed as the paper's tables shown beside compute their own."""
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    notes: list[str] = []
    for s in ctx.settings:
        per_seed[s.key], n = layout.reports(s, by)
        if ddof is not None:
            per_seed[s.key] = {seed: with_dob_ddof(r, ddof) for seed, r in per_seed[s.key].items()}
        notes += n
    return per_seed, notes


def _group_columns(reports: list[dict[str, Any]], papers: list[PaperTable], group_alias: dict[str, str]) -> list[Column]:
    """A column per group: the paper's order when its table is shown (its labels matched to ours, recorded
    in ``group_alias``), then ours."""
    ours_groups: list[str] = []
    for r in reports:
        for g in (r.get("group_accuracy") or {}):
            if g not in ours_groups:
                ours_groups.append(g)
    ordered: list[str] = []
    for pc in (papers[0].columns if papers else []):
        if "group" not in pc:
            continue
        names = [pc["group"], *pc.get("aliases", [])]
        match = next((g for g in ours_groups if norm_label(g) in {norm_label(x) for x in names}), None)
        label = match or pc["group"]
        group_alias[pc["group"]] = f"group:{label}"
        if label not in ordered:
            ordered.append(label)
    ordered += [g for g in ours_groups if g not in ordered]
    return [Column(f"group:{g}", g) for g in ordered]


def with_paper_rows(ctx: Context, layout: TableLayout, papers: list[PaperTable], columns: list[Column],
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
            cells = {c.key: paper_cell(t, prow, index.get(c.key), c.digits) for c in columns}
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
            block = layout.diff_block(setting, paper_targets)
            gap = recipe_gap(setting.identity)
            if gap and block is None:
                notes.append(f"{setting.label}: compared with the paper although its recipe differs: {'; '.join(gap)}")
            diff = {c.key: diff_cell(orow.cells[c.key], ref.cells[c.key], block) for c in columns}
            rows.append(Row("diff", {**orow.labels, "source": f"Δ ours − paper ({ref.labels['source'].removeprefix('paper, ')})"},
                            diff))
    rows += [ours_rows[s.key] for s in ctx.settings if s.key not in used]
    return rows
