"""``fairbench report``: a suite's (or a runs folder's) results as one self-contained HTML page.

Everything is inside the file (tables sortable by a few lines of inline vanilla JS, figures as
base64 PNG data URIs, styles): no network, no external script, style sheet or font, so the page
opens offline. Written whole or not at all (:func:`fairbench.runs.store.atomic_write_bytes`).
What the page holds, section by section: docs/results-files.md#reporthtml
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fairbench.cost import format_flops
from fairbench.metrics.uncertainty import MIN_SEEDS_FOR_INTERVALS, clipped_t_interval
from fairbench.results.layouts.base import LayoutOptions, get_layout
from fairbench.results.layouts.protocol import TITLES as PROTOCOL_TITLES
from fairbench.results.layouts.summary import headline
from fairbench.results.plots import PlotError, plot_curves, plot_pareto
from fairbench.results.reporting import load_selected, pareto_points, revision_note
from fairbench.runs.record import RunRecord
from fairbench.runs.store import atomic_write_bytes
from fairbench.selection_rules import get_rule

#: the Pareto axes when a suite names none: the protocol's question (worst group vs its spread)
DEFAULT_PARETO = ("dob", "worst_group_accuracy", None)
SUFFIXES = (".html", ".htm")


@dataclass
class Cell:
    text: str
    sort: float | None = None  # the numeric sort key, when the cell holds a number


@dataclass
class HtmlTable:
    headers: list[str]
    rows: list[list[Cell]]
    title: str = ""
    notes: list[str] = field(default_factory=list)


_UNITS = {"PFLOP": 1e15, "TFLOP": 1e12, "GFLOP": 1e9, "MFLOP": 1e6, "FLOP": 1.0}
_LEADING = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(PFLOP|TFLOP|GFLOP|MFLOP|FLOP)?")


def sort_key(value: Any) -> float | None:
    """A number's own value; for a text, its leading number (an interval ``"84.8 [82.0, 87.6]"``
    sorts by its point estimate, ``"2.29 TFLOP"`` by its FLOPs); None for any other text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    match = _LEADING.match(str(value))
    if not match:
        return None
    return float(match.group(1)) * _UNITS.get(match.group(2) or "FLOP", 1.0)


def cell(value: Any, text: str | None = None) -> Cell:
    if text is None:
        text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return Cell(text, sort_key(value))


# -- the layouts' JSON as tables ----------------------------------------------------------------

def layout_tables(name: str, done: list[RunRecord], skipped: list[tuple[str, str]]) -> list[HtmlTable]:
    """The tables of one registered layout, from its ``--format json`` (what ``compare`` prints)."""
    data = json.loads(get_layout(name).text(done, skipped, "json", LayoutOptions()))
    if name == "summary":
        return [_summary_table(data)]
    if isinstance(data, dict) and "tables" in data:  # fairbench.results.render (the paper's layouts)
        return [_cells_table(t) for t in data["tables"]]
    if isinstance(data, list) and data and all(isinstance(t, dict) and "rows" in t for t in data):
        return [_rows_table(t.get("title", ""), t["rows"], t.get("notes", [])) for t in data]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return [_rows_table("", data, [])]
    return [HtmlTable(["value"], [[Cell(json.dumps(data, indent=2))]])]  # a plugin's own shape, shown as is


def protocol_json(done: list[RunRecord], skipped: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """What ``compare --layout protocol --format json`` prints: per rule, its rows and notes."""
    return json.loads(get_layout("protocol").text(done, skipped, "json", LayoutOptions()))


def protocol_table(rule_table: dict[str, Any]) -> HtmlTable:
    """One rule's protocol table, columns as in ``compare --layout protocol``."""
    return HtmlTable(list(PROTOCOL_TITLES.values()), [[cell(row[k]) for k in PROTOCOL_TITLES] for row in rule_table["rows"]],
                     f"Protocol, {rule_table['title']}", rule_table["notes"])


def _rows_table(title: str, rows: list[dict[str, Any]], notes: list[str]) -> HtmlTable:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return HtmlTable(keys, [[cell(r.get(k)) for k in keys] for r in rows], title, notes)


def _summary_table(rows: list[dict[str, Any]]) -> HtmlTable:
    labels = [("method", "method"), ("needs", "needs"), ("dataset", "trained on"), ("eval", "evaluated on"),
              ("task", "task"), ("selection", "selection"), ("setting", "setting"), ("data", "data"),
              ("precision", "precision"), ("seeds", "seeds")]
    labels = [(k, t) for k, t in labels if any(r.get(k) is not None for r in rows)]
    metrics = headline(k for r in rows for k in r)
    body = []
    for r in rows:
        line = [cell(r.get(k)) for k, _ in labels]
        for key, _ in metrics:
            mean, half = r.get(key), r.get(f"{key}_ci95")
            text = "n/a" if mean is None else f"{mean:.2f}" + ("" if half is None else f" ± {half:.2f}")
            line.append(Cell(text, sort_key(mean)))
        body.append(line)
    return HtmlTable([t for _, t in labels] + [t for _, t in metrics], body, "Summary: mean ± 95% t-interval half-width over seeds")


def _cells_table(t: dict[str, Any]) -> HtmlTable:
    label_keys = list(dict.fromkeys(k for r in t["rows"] for k in r if k not in ("kind", "cells")))
    titles = [c["title"] for c in t["columns"]]
    body = [[cell(r.get(k)) for k in label_keys]
            + [Cell(r["cells"][c]["text"], sort_key(r["cells"][c]["value"])) for c in titles] for r in t["rows"]]
    return HtmlTable(label_keys + titles, body, t.get("title", ""), t.get("notes", []))


# -- figures ------------------------------------------------------------------------------------

def _png(draw: Callable[[Path], Any]) -> tuple[str | None, str]:
    """A data URI of the PNG ``draw(path)`` writes, or (None, why nothing was drawn)."""
    with tempfile.TemporaryDirectory(prefix="fairbench-report-") as tmp:
        path = Path(tmp) / "figure.png"
        try:
            draw(path)
        except PlotError as exc:
            return None, str(exc)
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii"), ""


def _budget_text(record: RunRecord) -> str:
    train = record.config["train"]
    if train.get("budget_flops") is not None:
        return f"budget {format_flops(float(train['budget_flops']))}"
    return f"budget {train['budget_steps']:g} steps" if train.get("budget_steps") is not None else ""


def plot_group_accuracy(records: list[RunRecord], output: Path, subtitle: str) -> None:
    """Test accuracy of every group, one bar per method (and budget, when a method has several),
    mean over seeds with 95 % t-intervals clipped to 0-100; one panel per (dataset, task)."""
    panels: dict[tuple[str, str], dict[str, dict[int, dict[str, float]]]] = {}
    for r in records:
        budgets = {_budget_text(o) for o in records if (o.dataset, o.task, o.method) == (r.dataset, r.task, r.method)}
        label = r.method + (f" ({_budget_text(r)})" if len(budgets) > 1 else "")
        groups = r.metrics()["test"].get("group_accuracy") or {}
        panels.setdefault((r.dataset, r.task), {}).setdefault(label, {})[r.seed] = groups
    if not panels:
        raise PlotError("no finished run has per-group test accuracy")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    widest = max(len(methods) * len({g for seeds in methods.values() for s in seeds.values() for g in s})
                 for methods in panels.values())  # bars in the fullest panel
    fig, axes = plt.subplots(len(panels), 1, figsize=(min(18.0, 4.0 + 0.22 * widest), 3.6 * len(panels)),
                             squeeze=False, layout="constrained")
    for ax, ((dataset, task), methods) in zip(axes[:, 0], panels.items()):
        groups = list(dict.fromkeys(g for seeds in methods.values() for s in seeds.values() for g in s))
        width = 0.8 / len(methods)
        cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
        for i, (label, seeds) in enumerate(sorted(methods.items())):
            means, lows, highs = [], [], []
            for g in groups:
                mean, low, high, _ = clipped_t_interval([s[g] for s in seeds.values() if s.get(g) is not None])
                means.append(mean)
                lows.append(0.0 if math.isnan(low) else mean - low)
                highs.append(0.0 if math.isnan(high) else high - mean)
            xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(xs, means, width, yerr=[lows, highs], capsize=2, color=cmap(i % cmap.N), ecolor="0.25",
                   label=f"{label} (n={len(seeds)})")
        ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}, {task}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(f"Per-group test accuracy: mean and 95% t-interval over seeds\n{subtitle}", fontsize=11)
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(output, buffer.getvalue())


# -- what the page says about the runs ------------------------------------------------------------

def _environment(record: RunRecord) -> dict[str, Any]:
    try:
        return record.environment()
    except (OSError, ValueError):
        return {}


def provenance_table(done: list[RunRecord]) -> HtmlTable:
    """Where the runs ran: each code revision, device, precision, thread count ... with its run count."""
    counts: dict[str, Counter] = {k: Counter() for k in ("code revision", "device", "GPU", "precision", "torch threads",
                                                          "torch", "python")}
    for r in done:
        env = _environment(r)
        for what, value in (("code revision", env.get("git_revision")), ("device", env.get("device")),
                            ("GPU", env.get("gpu")), ("precision", r.precision),
                            ("torch threads", env.get("torch_threads")),
                            ("torch", (env.get("packages") or {}).get("torch")), ("python", env.get("python"))):
            if what == "GPU" and value is None:
                continue
            counts[what][str(value) if value is not None else "(not recorded)"] += 1
    rows = [[Cell(what), Cell(value), cell(n)] for what, c in counts.items() for value, n in c.most_common()]
    return HtmlTable(["what", "value", "runs"], rows, "Where the runs ran",
                     ["The same seed on another device, precision or torch thread count can end in another model "
                      "(float reductions in another order): compare rows only within one of these."])


def cost_table(done: list[RunRecord]) -> HtmlTable:
    """Training cost per (dataset, method, budget), over every finished run (all search trials)."""
    by: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in done:
        by.setdefault((r.dataset, r.method, _budget_text(r)), []).append(r)
    rows = []
    for (dataset, method, budget), runs in sorted(by.items()):
        costs = [r.cost() or {} for r in runs]

        def mean(key: str) -> float | None:
            values = [c[key] for c in costs if c.get(key) is not None]
            return sum(values) / len(values) if len(values) == len(costs) else None

        flops, peak = mean("train_flops"), max((c.get("peak_memory_bytes") or 0 for c in costs), default=0)
        wall = [r.metrics().get("wall_time_s") for r in runs]
        rows.append([Cell(dataset), Cell(method), Cell(budget or "(epochs)"), cell(len(runs)),
                     Cell("n/a" if flops is None else format_flops(flops), flops),
                     cell(mean("optimizer_steps"), _fmt(mean("optimizer_steps"), "{:.0f}")),
                     cell(mean("train_seconds"), _fmt(mean("train_seconds"), "{:.1f}")),
                     Cell(f"{peak / 2**30:.2f}" if peak else "n/a", peak or None),
                     cell(_mean_or_none(wall), _fmt(_mean_or_none(wall), "{:.1f}"))])
    return HtmlTable(["dataset", "method", "budget", "runs", "train FLOPs (mean)", "optimizer steps (mean)",
                      "seconds in updates (mean)", "peak memory GiB (max)", "wall time s (mean)"], rows,
                     "Training cost per method (every finished run, all search trials)",
                     ["FLOPs: forward + backward of training, measured with torch.utils.flop_counter; peak memory: "
                      "CUDA peak allocated on a GPU, the process's peak resident set on the CPU."])


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _mean_or_none(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(numbers) / len(numbers) if numbers and len(numbers) == len(values) else None


def limits(done: list[RunRecord], skipped: list[tuple[str, str]], protocol: list[dict[str, Any]]) -> list[str]:
    """What the results do not show, read from the runs themselves."""
    out = []
    datasets = sorted({r.dataset for r in done})
    evaluated = sorted({ev.dataset for r in done for ev in r.evaluations()} - set(datasets))
    text = f"Other data: trained on {', '.join(datasets)} only"
    text += f" (also evaluated on {', '.join(evaluated)})" if evaluated else ""
    if all(d.startswith("synthface") for d in datasets):
        text += "; synthetic faces: nothing here is measured on real faces"
    out.append(text + ".")
    envs = [_environment(r) for r in done]
    devices = sorted({str(e.get("device", "(not recorded)")) for e in envs})
    precisions = sorted({str(r.precision) for r in done})
    threads = sorted({str(e.get("torch_threads", "?")) for e in envs})
    out.append(f"Other hardware: every run trained on {', '.join(devices)} ({', '.join(precisions)}, "
               f"torch threads {', '.join(threads)}); on other devices, precisions or thread counts the same seeds "
               "end in other models.")
    budgets: dict[tuple[str, str], set[str]] = {}
    for r in done:
        budgets.setdefault((r.dataset, r.method), set()).add(_budget_text(r) or "(epochs)")
    several = sorted({m for (_, m), b in budgets.items() if len(b) > 1})
    if several:
        others = sorted({m for (_, m), b in budgets.items() if len(b) == 1} - set(several))
        out.append(f"Other budgets: only {', '.join(several)} ran at several budgets; "
                   + (f"{', '.join(others)} at one only: how they do with more compute is not shown." if others else
                      "no method was run beyond them."))
    trials = [row["trials"] for t in protocol for row in t["rows"]]
    seeds = [row["seeds"] for t in protocol for row in t["rows"]]
    if trials:
        out.append(f"A larger search: at most {max(trials)} random-search trial(s) per method and seed; "
                   "more trials can change the order of the methods.")
    if seeds and min(seeds) < MIN_SEEDS_FOR_INTERVALS:
        out.append(f"Firm intervals: some rows have {min(seeds)} seed(s), fewer than {MIN_SEEDS_FOR_INTERVALS}: "
                   "their intervals are rough or missing.")
    if any(t["rule"] == "test_oracle" for t in protocol):
        out.append(f"A result from the oracle table: it is {get_rule('test_oracle').title}; it chooses trials on the "
                   "test split.")
    if skipped:
        out.append(f"The {len(skipped)} run(s) left out (listed at the end): unfinished or unreadable runs are in no "
                   "table.")
    return out


# -- the page -----------------------------------------------------------------------------------

def render_table(table: HtmlTable, table_id: str, show_title: bool = True) -> str:
    head = "".join(f'<th scope="col" title="click to sort">{html.escape(h)}</th>' for h in table.headers)
    rows = []
    for row in table.rows:
        cells = "".join((f'<td data-sort="{c.sort!r}">' if c.sort is not None else "<td>") + html.escape(c.text) + "</td>"
                        for c in row)
        rows.append(f"<tr>{cells}</tr>")
    title = f"<h3>{html.escape(table.title)}</h3>\n" if table.title and show_title else ""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return (f'{title}<div class="scroll"><table class="sortable" id="{html.escape(table_id)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>\n"
            + (f'<ul class="notes">{notes}</ul>\n' if notes else ""))


def _figure(uri: str | None, why: str, alt: str) -> str:
    if uri is None:
        return f'<p class="missing">{html.escape(alt)} not drawn: {html.escape(why)}</p>\n'
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>\n'


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
.meta { color: #555; } .missing { color: #a33; } nav li { margin: .1rem 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
td[data-sort] { font-variant-numeric: tabular-nums; }
.notes { font-size: .85rem; color: #333; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .8rem; color: #555; }
"""

#: sorting: numbers (each cell's data-sort: an interval's point estimate, FLOPs in FLOPs) before text
SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  const heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach((th, col) => th.addEventListener("click", () => {
    const up = th.getAttribute("aria-sort") !== "ascending";
    heads.forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    const key = row => {
      const c = row.cells[col];
      return c.dataset.sort !== undefined ? Number(c.dataset.sort) : c.textContent.trim();
    };
    const rows = Array.from(table.tBodies[0].rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
      const order = typeof x === "number" ? x - y : x.localeCompare(y);
      return up ? order : -order;
    });
    table.tBodies[0].append(...rows);
  }));
}
"""


def build_report(done: list[RunRecord], skipped: list[tuple[str, str]], *, title: str, description: str = "",
                 source: str = "", note: str | None = None, layouts: list[str] | None = None,
                 pareto: tuple[str, str, str | None] = DEFAULT_PARETO) -> str:
    """The page's HTML. ``layouts``: tables shown after the protocol's (default: summary);
    ``pareto``: (x, y, by) of the Pareto plot drawn for each selection rule."""
    from fairbench import __version__

    protocol = protocol_json(done, skipped)
    sections: list[tuple[str, str, str]] = []  # (id, heading, html)
    x, y, by = pareto
    for rule_table in protocol:
        rule, table = rule_table["rule"], protocol_table(rule_table)
        points, subtitle = pareto_points(done, rule)
        parts = [render_table(table, f"protocol-{rule}", show_title=False)]
        parts.append(_figure(*_png(lambda p: plot_pareto(points, x, y, p, by=by, subtitle=subtitle)),
                             f"Pareto plot, {y} vs {x}, {subtitle}"))
        parts.append(_figure(*_png(lambda p: plot_group_accuracy(points, p, subtitle)),
                             f"Per-group test accuracy, {subtitle}"))
        sections.append((f"rule-{rule}", table.title, "".join(parts)))
    for name in [n for n in (layouts or ["summary"]) if n != "protocol"]:
        tables = layout_tables(name, done, skipped)
        sections.append((f"layout-{name}", f"Layout: {name}",
                         "".join(render_table(t, f"layout-{name}-{i}") for i, t in enumerate(tables))))
    cost = cost_table(done)
    sections.append(("cost", cost.title, render_table(cost, "cost", show_title=False)))
    curves = []
    by_method: dict[tuple[str, str], list[RunRecord]] = {}
    for r in sorted(done, key=lambda r: r.run_id):
        by_method.setdefault((r.method, r.dataset), []).append(r)
    for (method, dataset), runs in sorted(by_method.items()):
        curves.append(_figure(*_png(lambda p: plot_curves([r.path for r in runs], p)),
                              f"Training curves of {method} on {dataset} ({len(runs)} runs; dot: the selected epoch)"))
    sections.append(("curves", "Training curves", "".join(curves)))
    provenance = provenance_table(done)
    sections.append(("provenance", provenance.title, render_table(provenance, "provenance", show_title=False)))
    sections.append(("limits", "What these results do not show",
                     "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in limits(done, skipped, protocol)) + "</ul>\n"))
    if skipped:
        sections.append(("skipped", "Runs not in the tables",
                         "<ul>" + "".join(f"<li><code>{html.escape(r)}</code>: {html.escape(why)}</li>"
                                          for r, why in skipped) + "</ul>\n"))
    nav = "".join(f'<li><a href="#{sid}">{html.escape(head)}</a></li>' for sid, head, _ in sections)
    body = "".join(f'<section id="{sid}">\n<h2>{html.escape(head)}</h2>\n{content}</section>\n'
                   for sid, head, content in sections)
    made = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
{f'<p>{html.escape(description)}</p>' if description else ''}
{f'<p class="missing">Note: {html.escape(note)}</p>' if note else ''}
<p class="meta">{len(done)} finished runs{html.escape(source)}; made by fairbench {html.escape(__version__)}
(<code>fairbench report</code>) at {made}. Click a column's title to sort by it.</p>
<nav><ul>{nav}</ul></nav>
{body}<script>{SCRIPT}</script>
</body>
</html>
"""


def check_output(output: Path) -> Path:
    output = Path(output)
    if output.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--output {output}: the report is one HTML file; name it FILE.html")
    return output


def write_report(runs_dir: Path, output: Path, suite=None,
                 allow_mixed_revisions: bool = False) -> tuple[Path | None, list[tuple[str, str]]]:
    """Write the page of ``suite``'s runs (a loaded :class:`fairbench.suites.suite.Suite`) or of every run
    under ``runs_dir``; returns (the page, or None when no run has finished; (run, reason) of
    the runs left out). A suite's runs must share one clean code revision unless
    ``allow_mixed_revisions``, as for its ``table.md`` (:func:`fairbench.results.reporting.revision_note`)."""
    output = check_output(output)
    done, skipped = load_selected(Path(runs_dir), suite)
    if not done:
        return None, skipped
    note = revision_note(done, suite, allow_mixed_revisions)
    if suite is not None:
        spec = suite.report.pareto[0] if suite.report.pareto else None
        page = build_report(done, skipped, title=f"Suite {suite.name}", description=suite.description.strip(),
                            note=note,
                            source=f" of {len(suite.jobs())} jobs ({suite.path}), runs under {runs_dir}",
                            layouts=list(suite.report.layouts),
                            pareto=(spec.x, spec.y, spec.by) if spec else DEFAULT_PARETO)
    else:
        page = build_report(done, skipped, title=f"Runs in {runs_dir}", source=f" under {runs_dir}")
    atomic_write_bytes(output, page.encode("utf-8"))
    return output, skipped
