"""The launcher contract: how a suite's pending jobs get trained.

``fairbench suite run FILE --launcher NAME`` looks NAME up in the ``fairbench.launchers``
entry-point group (built-ins: ``local``, ``slurm``), validates its options and calls
:meth:`Launcher.launch` with the jobs that are not done. A launcher only decides *where* and
*when* a job runs: every job goes through :func:`train_job` (the runner, under the run's lease),
so the run store stays the one record of what ran.
Adding one from another package: docs/clusters.md#a-launcher-of-your-own
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from fairbench.suites.launchers.suite_progress import SuiteProgress
    from fairbench.runs.job_state import JobState
    from fairbench.suites.suite import Job, Suite


class Launcher:
    """Trains a list of jobs; subclasses set ``Options`` (their settings) and ``launch``."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, options: "Launcher.Options"):
        self.options = options

    def describe(self, n_jobs: int) -> str:
        """One line for ``--dry-run``: how ``n_jobs`` jobs would be run."""
        return f"{n_jobs} jobs through the {getattr(self, 'registered_name', type(self).__name__)} launcher"

    def launch(self, todo: list["Job"], ctx: "LaunchContext") -> None:
        """Train ``todo`` (or hand them to a scheduler: then list them in ``ctx.result.submitted``,
        and the suite's evaluations and report wait for a later ``suite run``); record each finished
        job with :func:`record_outcome`."""
        raise NotImplementedError


@dataclass
class SuiteResult:
    jobs: list["Job"]
    before: dict[int, "JobState"]
    ran: list[int] = field(default_factory=list)  # job indices trained in this invocation
    failed: dict[int, str] = field(default_factory=dict)
    evaluated: list[tuple[int, str]] = field(default_factory=list)
    evaluation_errors: list[tuple[int, str, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    interrupted: bool = False
    busy: dict[int, str] = field(default_factory=dict)  # found running in another process: left to it
    submitted: list[int] = field(default_factory=list)  # handed to a batch scheduler, not finished yet

    def summary(self) -> str:
        skipped = sum(1 for s in self.before.values() if s.state == "done")
        others = sum(1 for s in self.before.values() if s.state in ("running", "invalid"))
        others += len(self.busy)
        text = (f"{len(self.jobs)} jobs: {len(self.ran)} trained now, {skipped} already done, {len(self.failed)} failed"
                + (f", {len(self.submitted)} submitted" if self.submitted else "")
                + (f", {others} left alone (running elsewhere or invalid)" if others else "")
                + (f"; {len(self.evaluated)} evaluations run" if self.evaluated else ""))
        if self.outputs:
            text += f"\nreport: {self.outputs[0].parent}/ ({', '.join(p.name for p in self.outputs)})"
        return text


@dataclass
class LaunchContext:
    suite: "Suite"
    runs_dir: Path
    progress: "SuiteProgress"
    result: "SuiteResult"
    #: jobs left alone because another live process owns them (index -> who)
    busy: dict[int, str] = field(default_factory=dict)
    #: ``--data-root DATASET=PATH`` of the suite run (for evaluations run beside the training)
    data_roots: dict[str, Path] = field(default_factory=dict)

    @property
    def report_dir(self) -> Path:
        return self.runs_dir / self.suite.report_dir_name


# -- one job, wherever it runs --------------------------------------------------------------------

@dataclass
class JobOutcome:
    state: str  # trained | done-before | busy | failed
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps({"state": self.state, "detail": self.detail})

    @classmethod
    def from_json(cls, text: str) -> "JobOutcome":
        data = json.loads(text)
        return cls(data["state"], data.get("detail", ""))


def train_job(config: dict[str, Any], runs_dir: Path, reporter=None) -> JobOutcome:
    """Train one job's run (resuming it if it was interrupted); never raises for the job's own errors
    (they are in its ``status.json`` too)."""
    from fairbench.config import RunConfig
    from fairbench.runs.lease import RunBusy
    from fairbench.runs.lifecycle import RunAlreadyDone
    from fairbench.training.run import execute
    from fairbench.training.run_progress import Reporter

    cfg = RunConfig.model_validate(config)
    try:
        execute(cfg, Path(runs_dir), reporter=reporter or Reporter(quiet=True))
    except RunAlreadyDone:
        return JobOutcome("done-before")
    except RunBusy as busy:
        return JobOutcome("busy", busy.owner.describe() if busy.owner else str(busy))
    except Exception as exc:  # recorded in status.json by the runner too
        return JobOutcome("failed", f"{type(exc).__name__}: {exc}")
    return JobOutcome("trained")


def record_outcome(ctx: LaunchContext, job: "Job", outcome: JobOutcome, seconds: float | None) -> None:
    """The suite's bookkeeping for one finished job, and its log line."""
    if outcome.state == "trained":
        ctx.result.ran.append(job.index)
        ctx.progress.end(job, "done", "", seconds)
    elif outcome.state == "done-before":
        ctx.progress.end(job, "done", "finished by another process meanwhile", seconds)
    elif outcome.state == "busy":
        ctx.busy[job.index] = outcome.detail
        ctx.progress.end(job, "skipped", f"being trained by {outcome.detail}", seconds)
    else:
        ctx.result.failed[job.index] = outcome.detail
        ctx.progress.end(job, "failed", outcome.detail, seconds)


def visible_gpus() -> list[str]:
    """This process's GPUs as ``CUDA_VISIBLE_DEVICES`` entries (indices, or UUIDs / MIG names as
    given); empty without CUDA."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch CUDA build
        return []


def make_launcher(name: str | None, table: dict[str, Any], overrides: dict[str, Any], where: str) -> Launcher:
    """The launcher ``name`` (default: the suite's ``[launcher] default``, else ``local``) with its
    options: the suite's ``[launcher.NAME]`` table, overridden by the command line's."""
    from pydantic import ValidationError

    from fairbench import registry
    from fairbench.config import ConfigError, explain_validation_error

    stray = [k for k, v in table.items() if k != "default" and not isinstance(v, dict)]
    if stray:
        raise ConfigError(f"{where}: [launcher] {stray[0]} = ...: options go in a table per launcher, e.g. "
                          f"[launcher.slurm] {stray[0]} = ...; [launcher] itself holds only default = \"NAME\"")
    name = name or table.get("default") or "local"
    cls = registry.launchers.get(name)
    section = table.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: [launcher.{name}] must be a table of options, got {section!r}")
    options = {**section, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        parsed = cls.Options.model_validate(options)
    except ValidationError as exc:
        raise explain_validation_error(exc, cls.Options, f"the {name} launcher's options ([launcher.{name}] "
                                                         f"in {where} and the command line)") from None
    return cls(parsed)
