"""One renderer per output format of the table model: a terminal table, markdown, LaTeX, CSV (long
format, one line per cell) and JSON.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from fairbench.results.table import Table


FORMATS = ("table", "markdown", "latex", "csv", "json")


def _grid(table: Table) -> tuple[list[str], list[list[str]]]:
    headers = table.label_titles + [c.title for c in table.columns]
    body = [[r.labels.get(t, "") for t in table.label_titles] + [r.cells[c.key].text() for c in table.columns]
            for r in table.rows]
    return headers, table.lead + body


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

