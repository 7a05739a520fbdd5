"""What users read about finished runs: the end-of-run table and its notes, ``fairbench compare``
(any registered layout of :mod:`fairbench.results.layouts`, for every run or a suite's) and a loaded
suite's report (``write_suite_report``: its layouts and pareto plots, next to its runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from fairbench.metrics.specs import get_spec, view_metrics
from fairbench.results.layouts.base import LayoutOptions, get_layout
from fairbench.results.layouts.summary import number_text, summary_frame
from fairbench.results.notes import CHANCE_MARGIN_PP, at_chance
from fairbench.results.plots import PlotError, plot_pareto
from fairbench.runs.catalog import finished, load_records
from fairbench.runs.record import RunRecord, selected_epoch
from fairbench.runs.store import atomic_write_bytes

#: the end-of-run table's metric rows under the groups (then every metric whose spec asks for "run")
RUN_SUMMARY = ("max_group_accuracy", "min_group_accuracy", "max_min_ratio", "dob", "deo", "deodds", "dp_difference")


def run_summary(metrics: dict[str, Any], split: str = "test"):
    """A rich table: per-group accuracy with supports, then the headline fairness metrics."""
    from rich.table import Table

    report = metrics[split]
    table = Table(title=f"{split} metrics (checkpoint of epoch {selected_epoch(metrics)}, "
                        f"selected by val {metrics['selection']['rule']})")
    table.add_column("group")
    table.add_column("n", justify="right")
    table.add_column("accuracy %", justify="right")
    tpr = report.get("group_tpr") or {}
    if tpr:
        table.add_column("TPR %", justify="right")
        table.add_column("FPR %", justify="right")
    for group, acc in report["group_accuracy"].items():
        row = [group, str(report["group_support"][group]["n"]), number_text(acc)]
        if tpr:
            row += [number_text(tpr.get(group)), number_text((report.get("group_fpr") or {}).get(group))]
        table.add_row(*row)
    table.add_section()
    extra = ["", ""] if tpr else []
    table.add_row("overall (pooled)", str(report["n"]), number_text(report["accuracy"]), *extra)
    for key in view_metrics("run", RUN_SUMMARY):
        if key in report:
            spec = get_spec(key)
            table.add_row(spec.title_in("run"), "", number_text(report[key], spec.digits), *extra)
    return table


def run_notes(record: RunRecord, split: str = "test") -> list[str]:
    """Warnings under the end-of-run table: a model at chance, or one that predicts a single class
    for every image (of some group), has small fairness gaps because it has no skill."""
    report = record.metrics()[split]
    notes = []
    guess = at_chance([report])
    if guess is not None:
        notes.append(f"accuracy {report['accuracy']:.2f} % is within {CHANCE_MARGIN_PP:g} pp of a random guess "
                     f"({guess:.0f} %): the model is at chance, and fairness gaps near 0 here mean no skill")
    try:
        frame = record.predictions(split)
        classes = json.loads((record.path / "dataset.json").read_text())["classes"]
    except (OSError, ValueError, KeyError):
        return notes
    if frame.empty:
        return notes
    name = lambda k: str(classes[k]) if 0 <= k < len(classes) else str(k)  # noqa: E731
    if frame["pred"].nunique() == 1:
        notes.append(f"the model predicts one class ({name(int(frame['pred'].iloc[0]))}) for every {split} image: "
                     "fairness gaps of 0 here mean no skill")
        return notes
    constant = {str(g): int(p.iloc[0]) for g, p in frame.groupby("group", sort=False)["pred"] if p.nunique() == 1 and len(p) > 1}
    if constant:
        listed = ", ".join(f"{g} (always {name(k)})" for g, k in constant.items())
        notes.append(f"the model predicts one class for every {split} image of {len(constant)} group(s): {listed}; "
                     "their rates say nothing about skill, and gaps that involve them are not fairness")
    return notes


def collect_runs(runs_dir: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The summary rows of every finished run under ``runs_dir``; and (run, reason) for every run left out."""
    done, skipped = load_selected(runs_dir)
    return summary_frame(done), skipped


def load_selected(runs_dir: Path, suite=None) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """The finished records under ``runs_dir`` (of ``suite``, a loaded :class:`fairbench.suites.suite.Suite`,
    if given), and (run, reason) for every run left out."""
    records, problems = load_records(runs_dir)
    if suite is not None:
        records, problems = suite.members(records, problems)
        for record in records:  # the trial breaks ties between equally scored trials (fairbench.selection_rules)
            job = suite.job_for(record.config)
            record.trial = job.trial if job is not None else None
    done, skipped = finished(records)
    return done, skipped + problems


def compare(runs_dir: Path, *, layouts: list[str] | None = None, fmt: str = "table", suite=None,
            paper: bool | None = None, needs: bool | None = None, by: str | None = None,
            dataset: str | None = None, allow_mixed_revisions: bool = False) -> tuple[str, list[tuple[str, str]]]:
    """The text of ``fairbench compare``, and (run, reason) for every run left out.

    ``suite`` (a loaded :class:`fairbench.suites.suite.Suite`): only its runs, and its ``[report]
    layouts`` by default; else every run and the ``summary`` layout. A suite's runs must share one
    clean code revision unless ``allow_mixed_revisions`` (then the text ends with a note listing
    them; csv and json, which hold only rows, get it on stderr)."""
    done, skipped = load_selected(runs_dir, suite)
    note = revision_note(done, suite, allow_mixed_revisions)
    layouts = layouts or (list(suite.report.layouts) if suite else ["summary"])
    text = compare_records(done, skipped, layouts, fmt, paper=paper, needs=needs, by=by, dataset=dataset)
    if note and text:
        if fmt in ("csv", "json"):
            print(f"note: {note}", file=sys.stderr)
        else:
            text += {"markdown": f"\nNote: {note}\n", "latex": f"% note: {note}\n"}.get(fmt, f"\nnote: {note}\n")
    return text, skipped


def revision_note(done: list[RunRecord], suite, allow_mixed_revisions: bool) -> str | None:
    """A suite's tables hold one clean code revision (fairbench.runs.revisions): refused otherwise, or,
    when allowed, the note that lists the revisions and their runs. None without a suite."""
    from fairbench.runs.revisions import check_table, revision_counts, table_note

    if suite is None:
        return None
    counts = revision_counts(r.path for r in done)
    if not allow_mixed_revisions:
        check_table(counts, f"suite {suite.name} ({suite.path})")
    return table_note(counts)


def compare_records(done: list[RunRecord], skipped: list[tuple[str, str]], layouts: list[str], fmt: str, *,
                    paper: bool | None = None, needs: bool | None = None, by: str | None = None,
                    dataset: str | None = None) -> str:
    """The tables of ``layouts`` over finished records, one after the other (table, markdown and
    latex formats only when there are several); "" without records."""
    if len(layouts) > 1 and fmt in ("csv", "json"):
        raise ValueError(f"--format {fmt} holds one layout; pick one with --layout ({', '.join(layouts)})")
    chosen = [(name, get_layout(name)) for name in layouts]  # an unknown name fails before any work
    if not done:
        return ""
    options = LayoutOptions(paper=paper, needs=needs, by=by, dataset=dataset)
    parts = []
    for name, layout in chosen:
        text = layout.text(done, skipped, fmt, options)
        if len(layouts) > 1:
            heading = {"markdown": f"## Layout: {name}\n\n", "latex": f"% layout: {name}\n"}.get(fmt, f"== {name} ==\n\n")
            text = heading + text
        parts.append(text.rstrip("\n") + "\n")
    return "\n".join(parts)


def pareto_points(done: list[RunRecord], rule: str | None) -> tuple[list[RunRecord], str | None]:
    """The records a Pareto plot draws, and its subtitle: with a selection ``rule``, each seed's
    search trial chosen by it (as the protocol tables); without, every record and no subtitle."""
    if not rule:
        return done, None
    from fairbench.results.layouts.protocol import chosen_records
    from fairbench.selection_rules import get_rule

    return chosen_records(done, rule), f"search trials {get_rule(rule).title}"


def write_suite_report(suite, runs_dir: Path, out=None, allow_mixed_revisions: bool = False) -> list[Path]:
    """``<runs-dir>/suite-<name>/table.md`` (every layout of the loaded ``suite``'s [report]) and
    its pareto plots (``pareto.png``, then ``pareto-<x>-<y>.png``); runs of one clean code revision
    unless ``allow_mixed_revisions`` (then the report says which)."""
    out = out or sys.stderr
    folder = Path(runs_dir) / suite.report_dir_name
    done, skipped = load_selected(runs_dir, suite)
    note = revision_note(done, suite, allow_mixed_revisions)
    text = compare_records(done, skipped, list(suite.report.layouts), "markdown")
    if not text:
        print(f"no finished run of suite {suite.name} under {runs_dir}: no report written", file=out)
        return []
    parts = [f"# Suite {suite.name}\n\n", suite.description.strip() + "\n\n" if suite.description else "",
             f"{len(done)} finished runs of {len(suite.jobs())} jobs ({suite.path}).\n\n",
             f"Note: {note}\n\n" if note else "", text]
    if skipped:
        parts.append("\n## Runs not in the tables\n\n" + "".join(f"- `{rid}`: {why}\n" for rid, why in skipped))
    written = [folder / "table.md"]
    atomic_write_bytes(written[0], "".join(parts).encode())
    for i, spec in enumerate(suite.report.pareto):
        target = folder / ("pareto.png" if i == 0 else
                           f"pareto-{spec.x}-{spec.y}" + (f"-{spec.rule}" if spec.rule else "") + ".png")
        points, subtitle = pareto_points(done, spec.rule)
        try:
            plot_pareto(points, spec.x, spec.y, target, by=spec.by, subtitle=subtitle)
        except PlotError as exc:
            print(f"pareto plot {spec.y} vs {spec.x} not drawn: {exc}", file=out)
            continue
        written.append(target)
    for path in written:
        print(f"wrote {path}", file=out)
    return written
