"""Where a suite's job stands, read from the run store: its run folder's status, the evaluations it
still lacks, and the queue records that say a batch scheduler holds it (``.queue/<run_id>.json``,
"submitted, not started yet"). ``fairbench suite status`` reads this, never the scheduler.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairbench.runs.record import read_status
from fairbench.runs.store import atomic_write_json, now

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fairbench.suites.suite import EvaluationSpec, Job

QUEUE_FOLDER = ".queue"


def queue_record_path(runs_dir: Path, run_id: str) -> Path:
    return Path(runs_dir) / QUEUE_FOLDER / f"{run_id}.json"


def mark_queued(runs_dir: Path, run_id: str, **info: Any) -> None:
    """Record that a scheduler holds this run (``suite status`` shows it as queued until it starts)."""
    atomic_write_json(queue_record_path(runs_dir, run_id), {"queued": now(), "time": time.time(), **info})


def queued(runs_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The run's queue record, or None. Only a record newer than the run's own status counts."""
    path = queue_record_path(runs_dir, run_id)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    status = Path(runs_dir) / run_id / "status.json"
    try:
        if status.stat().st_mtime > record.get("time", 0):
            return None
    except FileNotFoundError:
        pass
    return record


@dataclass
class JobState:
    state: str  # done | running | queued | failed | incomplete | pending | invalid
    detail: str = ""


def missing_evaluations(run_dir: Path, specs: "Iterable[EvaluationSpec]") -> "list[EvaluationSpec]":
    """The evaluations of a run that have no results in its folder yet (``evaluations/<folder>/metrics.json``)."""
    return [spec for spec in specs if not (Path(run_dir) / "evaluations" / spec.folder / "metrics.json").is_file()]


def job_state(job: "Job", runs_dir: Path) -> JobState:
    """Where a job stands, read from the run store (and the queue records of a scheduler)."""
    if job.error:
        return JobState("invalid", job.error.splitlines()[0])
    path = Path(runs_dir) / job.run_id
    submitted = queued(runs_dir, job.run_id)  # a scheduler holds it and it has not started (since)
    if not path.is_dir():
        return JobState("queued", submitted.get("detail", "")) if submitted else JobState("pending")
    status = read_status(path)
    state = status.get("state", "incomplete")
    if submitted and state in ("failed", "incomplete"):
        return JobState("queued", submitted.get("detail", ""))
    if state == "done":
        missing = [e.folder for e in missing_evaluations(path, job.evaluations)]
        return JobState("done", f"evaluations missing: {', '.join(missing)}" if missing else "")
    if state == "running":
        epoch = status.get("epoch")
        where = f"pid {status.get('pid')} on {status.get('host')}"
        return JobState("running", f"epoch {epoch + 1}/{job.config.train.epochs}, {where}" if epoch is not None else where)
    if state == "failed":
        return JobState("failed", (status.get("error") or "").splitlines()[0] if status.get("error") else "")
    return JobState(state, status.get("reason", ""))
