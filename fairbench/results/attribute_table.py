"""The paper's table 8 shape: one metric (there, minimum group accuracy) per target attribute (rows)
and setting (columns), the paper's models first with our difference to each, then ours.
"""

from __future__ import annotations


from fairbench.metrics.specs import get_spec
from fairbench.results.cells import diff_cell, ours_cell, paper_cell
from fairbench.results.grouping import Context, Setting, precision_label
from fairbench.results.published import NEEDS_LEGEND, method_needs, paper_tables_for, recipe_gap, show_paper
from fairbench.results.table import Cell, Column, Row, Table
from fairbench.results.table_layout import TableLayout


def metric_by_attribute_table(layout: TableLayout, ctx: Context, paper: bool | None, show_needs: bool) -> Table:
    """The layout's one metric per target attribute (rows) and setting (columns), the paper's models first."""
    metric = layout.metrics[0]
    papers = paper_tables_for(layout.registered_name, ctx, None)
    show = show_paper(ctx, papers, paper)
    t = papers[0] if show else None
    digits = get_spec(metric).digits
    targets: list[str] = [r["attribute"] for r in t.rows] if t else []
    targets += sorted({x for s in ctx.settings for x in s.targets} - set(targets))
    columns: list[Column] = []
    cells: dict[str, dict[str, Cell]] = {a: {} for a in targets}
    notes = ["mean ± 95% t-interval half-width over seeds (none with a single seed); " + "; ".join(layout.notes([]))]
    if show_needs:
        notes.append(NEEDS_LEGEND)

    def ours_column(s: Setting) -> Column:
        seeds = len(s.seeds)
        col = Column(f"{s.label}|ours", s.label, digits, f"ours, {seeds} seed{'s' if seeds != 1 else ''}" + precision_label(s),
                     method_needs(s.method, s.selection))
        for a in targets:
            reps = {seed: ev.report for seed, evs in s.seeds.items() for ev in evs if ev.record.target == a}
            cells[a][col.key] = ours_cell(reps, f"metric:{metric}", digits)
        return col

    used = set()
    if t:
        for j, model in enumerate(t.models):
            pcol = Column(f"{model['model']}|paper", f"{model['model']} (paper)", digits, f"paper, table {t.id}",
                          method_needs(model["method"], None) if model.get("method") else "—: not published")
            rows_by_attr = {r["attribute"]: r for r in t.rows}
            for a in targets:
                prow = rows_by_attr.get(a)
                cells[a][pcol.key] = paper_cell(t, prow, j, digits) if prow else Cell(note="—: not published", digits=digits)
            columns.append(pcol)
            for s in ctx.settings:
                if s.method != model.get("method"):
                    continue
                used.add(s.key)
                ocol = ours_column(s)
                dcol = Column(f"{s.label}|diff", f"Δ {s.label}", digits, "Δ ours − paper", ocol.needs)
                for a in targets:
                    cells[a][dcol.key] = diff_cell(cells[a][ocol.key], cells[a][pcol.key])
                columns += [ocol, dcol]
                gap = recipe_gap(s.identity)
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
    title = f"{layout.title(ctx, None)}: {ctx.describe()}" + (f" [paper table {t.id}]" if t else "")
    context = {"trained_on": ctx.trained_on, "target": None, "protected": list(ctx.protected),
               "evaluated_on": ctx.evaluated_on, "split": ctx.split, "paper_tables": [t.id] if t else []}
    lead = [["source"] + [c.source for c in columns]] + ([["needs"] + [c.needs for c in columns]] if show_needs else [])
    return Table(layout.registered_name, title, context, ["attribute"], columns, rows, notes, lead)


