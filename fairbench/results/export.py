"""``fairbench export``: every finished run's metrics in one long table (Parquet or CSV).

One row per (run, evaluation, split, group, metric), beside the run's configuration, seed,
search trial, budget, cost, data fingerprint and code revision, so that any table can be
recomputed with pandas alone. The schema is documented in ``docs/results-files.md``; the
columns are :data:`RUN_COLUMNS`, :data:`ROW_COLUMNS` and one ``config.<dotted key>`` column per
configuration key any run has.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from fairbench.runs.catalog import flatten
from fairbench.runs.record import RunRecord
from fairbench.runs.store import atomic_write_bytes

#: columns that describe the run (the same on all of its rows)
RUN_COLUMNS = ("run_id", "method", "dataset", "target", "protected", "task", "seed", "trial", "setting", "selection",
               "data_fingerprint", "git_revision", "device", "precision", "torch_threads", "budget_key",
               "budget_amount", "budget_used", "cost_train_flops", "cost_optimizer_steps", "cost_updates",
               "cost_train_seconds", "cost_peak_memory_bytes", "wall_time_s")
#: columns that say which number a row holds
ROW_COLUMNS = ("evaluation", "eval_dataset", "split", "group", "metric", "value")
OWN = "own"  # the evaluation name of a run's own val / test splits
#: numeric report entries that say how a report was computed, not what it measured
_SETTINGS = {"num_classes", "num_groups", "min_support", "ddof", "ece_bins", "positive_label"}
SUFFIXES = (".parquet", ".csv")


def report_rows(report: dict[str, Any]) -> Iterable[tuple[str | None, str, float]]:
    """(group, metric, value) of one metric report: pooled numbers with group None, then the
    per-group ones (``group_accuracy`` -> metric ``accuracy`` per group; ``group_support`` ->
    ``n``, ``pos``, ``neg`` per group)."""
    for key, value in report.items():
        if key not in _SETTINGS and _is_number(value):
            yield None, key, float(value)
    for key, per_group in report.items():
        if not key.startswith("group_") or not isinstance(per_group, dict):
            continue
        for group, value in per_group.items():
            if isinstance(value, dict):  # group_support: {"n": .., "pos": .., "neg": ..}
                yield from ((str(group), k, float(v)) for k, v in value.items() if _is_number(v))
            elif _is_number(value) or value is None:
                yield str(group), key[len("group_"):], math.nan if value is None else float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_columns(record: RunRecord, trial: int | None) -> dict[str, Any]:
    metrics = record.metrics()
    try:
        env = record.environment()
    except (OSError, ValueError):  # a run recorded without one: the columns stay empty
        env = {}
    cost = metrics.get("cost") or {}
    budget = metrics.get("budget") or {}
    budget_key = next((k for k in ("budget_flops", "budget_steps") if record.config["train"].get(k) is not None), None)
    return {
        "run_id": record.run_id, "method": record.method, "dataset": record.dataset, "target": record.target,
        "protected": "+".join(record.protected), "task": record.task, "seed": record.seed, "trial": trial,
        "setting": record.setting_key, "selection": record.selection, "data_fingerprint": record.data_fingerprint,
        "git_revision": env.get("git_revision"), "device": env.get("device"), "precision": record.precision,
        "torch_threads": env.get("torch_threads"),
        "budget_key": f"train.{budget_key}" if budget_key else None,
        "budget_amount": record.config["train"][budget_key] if budget_key else None,
        "budget_used": budget.get("used"),
        "cost_train_flops": cost.get("train_flops"), "cost_optimizer_steps": cost.get("optimizer_steps"),
        "cost_updates": cost.get("updates"), "cost_train_seconds": cost.get("train_seconds"),
        "cost_peak_memory_bytes": cost.get("peak_memory_bytes"), "wall_time_s": metrics.get("wall_time_s"),
    }


def export_frame(done: list[RunRecord], suite=None) -> pd.DataFrame:
    """The long table of finished records; ``suite`` (a loaded :class:`fairbench.suites.suite.Suite`)
    fills the ``trial`` column (a run folder does not record its search trial)."""
    rows: list[dict[str, Any]] = []
    for record in sorted(done, key=lambda r: r.run_id):
        job = suite.job_for(record.config) if suite is not None else None
        run = run_columns(record, job.trial if job is not None else None)
        config = {f"config.{k}": v for k, v in flatten({k: v for k, v in record.config.items() if k != "run_id"}).items()}
        metrics = record.metrics()
        reports = [(OWN, record.dataset, split, metrics[split]) for split in ("val", "test") if split in metrics]
        for sub in record.evaluation_folders():
            ev = json.loads((sub / "metrics.json").read_text())
            reports.append((sub.name, ev.get("dataset", sub.name), ev.get("split", "test"), ev["report"]))
        for evaluation, eval_dataset, split, report in reports:
            for group, metric, value in report_rows(report):
                rows.append({**run, "evaluation": evaluation, "eval_dataset": eval_dataset, "split": split,
                             "group": group, "metric": metric, "value": value, **config})
    frame = pd.DataFrame(rows, columns=None if rows else [*RUN_COLUMNS, *ROW_COLUMNS])
    for column in [c for c in frame.columns if c.startswith("config.")]:
        frame[column] = _one_type(frame[column])
    return frame


def _one_type(column: pd.Series) -> pd.Series:
    """A configuration column Parquet can store: numbers stay numbers, anything mixed or nested
    (lists, tables, numbers beside text) becomes its JSON text."""
    present = [v for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if all(_is_number(v) for v in present) or all(isinstance(v, bool) for v in present) \
            or all(isinstance(v, str) for v in present):
        return column
    return column.map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True))


def check_output(output: Path) -> Path:
    output = Path(output)
    if output.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--output {output}: the export is written as .parquet or .csv; name the file so")
    return output


def write_export(frame: pd.DataFrame, output: Path) -> None:
    """Write ``frame`` whole or not at all, as Parquet or CSV by the file's suffix."""
    output = check_output(output)
    buffer = io.BytesIO()
    if output.suffix.lower() == ".parquet":
        frame.to_parquet(buffer, index=False)
    else:
        frame.to_csv(buffer, index=False)
    atomic_write_bytes(output, buffer.getvalue())


def export_runs(runs_dir: Path, output: Path, suite=None) -> tuple[pd.DataFrame | None, list[tuple[str, str]]]:
    """Write the long table of ``suite``'s finished runs (or of every run under ``runs_dir``) to
    ``output``; returns (the table, or None when no run has finished; (run, reason) of the runs
    left out)."""
    from fairbench.results.reporting import load_selected

    output = check_output(output)
    done, skipped = load_selected(Path(runs_dir), suite)
    if not done:
        return None, skipped
    frame = export_frame(done, suite)
    write_export(frame, output)
    return frame, skipped
