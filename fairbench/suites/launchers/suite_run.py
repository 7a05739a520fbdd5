"""Running a suite: train every job not yet done through a launcher, run its cross-dataset
evaluations, write its report; and list its jobs with their states (``fairbench suite run |
status``). The suite itself (schema, jobs) is :mod:`fairbench.suites.suite`; where jobs train is the
launcher's (:mod:`fairbench.suites.launchers.base`); the report is :mod:`fairbench.results.reporting`'s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fairbench.config import ConfigError
from fairbench.suites.launchers.base import LaunchContext, SuiteResult, make_launcher
from fairbench.suites.launchers.suite_progress import SuiteProgress
from fairbench.results.reporting import write_suite_report
from fairbench.runs.job_state import JobState, job_state, missing_evaluations
from fairbench.suites.suite import Job, Suite, short


def _resolve_jobs(suite: Suite, data_roots: dict[str, Path] | None, device: str | None, *,
                  refuse_invalid: bool) -> list[Job]:
    """The suite's jobs; with ``refuse_invalid``, a ConfigError listing those that do not resolve."""
    all_jobs = suite.resolve(data_roots, device)
    invalid = [j for j in all_jobs if j.error]
    if invalid and refuse_invalid:
        lines = "\n".join(f"  job {j.index} ({j.describe()}): {j.error}" for j in invalid)
        raise ConfigError(f"{len(invalid)} of {len(all_jobs)} jobs of {suite.path} do not resolve "
                          f"(nothing was run; pass --skip-invalid to run the others):\n{lines}")
    return all_jobs


def _log_skipped(all_jobs: list[Job], before: dict[int, JobState], progress: SuiteProgress) -> None:
    """Say which jobs this run leaves alone: done, or owned / queued elsewhere, or invalid."""
    skipped = [j for j in all_jobs if before[j.index].state == "done"]
    if skipped:
        progress.log(f"{len(skipped)} of {len(all_jobs)} jobs already done: skipped")
    for job in all_jobs:
        if before[job.index].state in ("running", "queued", "invalid"):
            progress.log(f"skip {job.run_id or 'job ' + str(job.index)}: {before[job.index].state} "
                         f"({before[job.index].detail})")


def run_suite(suite: Suite, runs_dir: Path, *, jobs: int | None = None, dry_run: bool = False,
              data_roots: dict[str, Path] | None = None, device: str | None = None,
              skip_invalid: bool = False, quiet: bool = False, out=None, launcher: str | None = None,
              launcher_options: dict[str, Any] | None = None, allow_mixed_revisions: bool = False) -> SuiteResult:
    """Train every job not yet done, run the listed evaluations, write the reports.

    Finished jobs are skipped; failed and incomplete ones run again (the runner resumes from
    their last checkpoint when there is one); jobs another live process owns (its lease, see
    fairbench.runs.lease) are left to it, so several ``suite run``s of one suite share the work.
    ``launcher`` (default: the suite's ``[launcher] default``, else ``local``) decides where the
    jobs run; ``launcher_options`` override its ``[launcher.NAME]`` table; ``jobs`` is the local
    launcher's worker count. A launcher that only submits (Slurm without ``wait``) leaves the
    evaluations and reports to a later ``suite run``. Its tables hold one code revision: training
    at a dirty tree, or beside finished runs of another revision, is refused unless
    ``allow_mixed_revisions`` (fairbench.runs.revisions)."""
    out = out or sys.stdout
    runs_dir = Path(runs_dir)
    options = dict(launcher_options or {})
    if jobs is not None:
        options["jobs"] = jobs
    chosen = make_launcher(launcher, suite.launcher, options, str(suite.path))
    all_jobs = _resolve_jobs(suite, data_roots, device, refuse_invalid=not (skip_invalid or dry_run))
    before = {j.index: job_state(j, runs_dir) for j in all_jobs}
    result = SuiteResult(all_jobs, before)
    todo = [j for j in all_jobs if before[j.index].state in ("pending", "failed", "incomplete")]
    if dry_run:
        print_jobs(all_jobs, before, out, dry_run=True)
        print(f"\n{len(todo)} of {len(all_jobs)} jobs would run through {chosen.describe(len(todo))}"
              + f"; runs under {runs_dir}/, reports in {runs_dir / suite.report_dir_name}/", file=out)
        return result
    if todo and not allow_mixed_revisions:  # before anything trains: a table of one revision
        from fairbench.runs.revisions import check_before_training, revision_counts
        from fairbench.runs.environment import git_revision

        finished = revision_counts(runs_dir / j.run_id for j in all_jobs if before[j.index].state == "done")
        check_before_training(git_revision(), finished, f"suite {suite.name} ({suite.path})")
    done_before = sum(1 for s in before.values() if s.state in ("done", "running", "queued", "invalid"))
    with SuiteProgress(len(all_jobs), done_before, quiet=quiet) as progress:
        _log_skipped(all_jobs, before, progress)
        learn_pace(progress.pace, all_jobs, before, runs_dir)  # a resumed suite: the pace of the runs done
        ctx = LaunchContext(suite, runs_dir, progress, result, data_roots=dict(data_roots or {}))
        try:
            if todo and suite.search is not None and suite.search.strategy == "halving":
                from fairbench.suites.halving import launch_halving

                launch_halving(chosen, todo, all_jobs, ctx, suite.search)  # rung by rung (fairbench.suites.halving)
                result.ran = list(dict.fromkeys(result.ran))  # a trial trained at several rungs counts once
            elif todo:
                chosen.launch(todo, ctx)
        except KeyboardInterrupt:
            result.interrupted = True
            progress.log("interrupted: run the same command again to resume")
            raise
        result.busy = ctx.busy
        if result.submitted:  # a batch scheduler has them: evaluations and reports in a later `suite run`
            progress.log(f"{len(result.submitted)} jobs submitted; `fairbench suite status {suite.path}` follows them; "
                         "run this command again once they are done for the evaluations and the report")
            return result
        _run_evaluations(all_jobs, runs_dir, progress, result, data_roots or {})
    result.outputs = write_suite_report(suite, runs_dir, out=sys.stderr, allow_mixed_revisions=allow_mixed_revisions)
    if result.outputs:  # the same runs as one page to open anywhere, beside table.md (fairbench.results.report_html)
        from fairbench.results.report_html import write_report

        page, _ = write_report(runs_dir, runs_dir / suite.report_dir_name / "report.html", suite,
                               allow_mixed_revisions=allow_mixed_revisions)
        if page is not None:
            print(f"wrote {page}", file=sys.stderr)
            result.outputs.append(page)
    return result


def _run_evaluations(all_jobs: list[Job], runs_dir: Path, progress: SuiteProgress, result: SuiteResult,
                     data_roots: dict[str, Path]) -> None:
    from fairbench.runs.record import RunRecord

    wanted = []
    for job in all_jobs:
        if not job.evaluations or job.error:
            continue
        path = runs_dir / job.run_id
        if not path.is_dir() or RunRecord(path).status.get("state") != "done":
            continue
        wanted += [(job, e) for e in missing_evaluations(path, job.evaluations)]
    if not wanted:
        return
    try:
        from fairbench.evaluation.cross_eval import evaluate_run
    except ImportError as exc:
        progress.log(f"cross-dataset evaluations skipped ({len(wanted)} listed in the suite): fairbench.evaluation.cross_eval "
                     f"is not available ({exc}); run the suite again once it is installed")
        return
    for job, spec in wanted:
        root = data_roots.get(spec.dataset)
        progress.log(f"evaluate {job.run_id} on {spec.dataset} {spec.split}")
        try:
            evaluate_run(runs_dir / job.run_id, spec.dataset, data_root=root, split=spec.split, options=dict(spec.options))
        except Exception as exc:  # one missing dataset must not stop the others
            result.evaluation_errors.append((job.index, spec.folder, f"{type(exc).__name__}: {exc}"))
            progress.log(f"  evaluation failed: {type(exc).__name__}: {exc}")
            continue
        result.evaluated.append((job.index, spec.folder))


def print_jobs(jobs: list[Job], states: dict[int, JobState], out=None, dry_run: bool = False) -> None:
    from tabulate import tabulate

    out = out or sys.stdout
    rows = []
    varying = _varying_keys(jobs)
    for job in jobs:
        st = states[job.index]
        action = ""
        if dry_run:
            action = {"pending": "run", "failed": "retry", "incomplete": "resume", "done": "skip (done)",
                      "running": "skip (running)", "queued": "skip (queued)", "invalid": "cannot run"}[st.state]
        spec = {k: v for k, v in job.spec.items() if k not in ("method", "train.seed")}
        row = [job.index, job.run_id or "—", job.method, job.seed,
               ", ".join(f"{k}={short(spec[k])}" for k in varying if k in spec) or "—", st.state,
               st.detail or "—"]
        if dry_run:
            row.insert(6, action)
        rows.append(row)
    headers = ["#", "run id", "method", "seed", "varies", "state", "detail"]
    if dry_run:
        headers.insert(6, "action")
    print(tabulate(rows, headers=headers, tablefmt="simple"), file=out)


def _varying_keys(jobs: list[Job]) -> list[str]:
    keys: list[str] = []
    for job in jobs:
        for k in job.spec:
            if k not in keys and k not in ("method", "train.seed"):
                keys.append(k)
    return [k for k in keys if len({json.dumps(j.spec.get(k), sort_keys=True) for j in jobs}) > 1]


def status_json(suite: Suite, runs_dir: Path, data_roots: dict[str, Path] | None = None) -> dict[str, Any]:
    """``suite status --json``: every job (index, run id, method, seed, trial, declared keys, state,
    detail, error) and the count of each state."""
    jobs = suite.resolve(data_roots)
    states = {j.index: job_state(j, runs_dir) for j in jobs}
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    return {"suite": suite.name, "file": str(suite.path), "runs_dir": str(runs_dir), "counts": counts,
            "jobs": [{"index": j.index, "run_id": j.run_id, "method": j.method, "seed": j.seed, "trial": j.trial,
                      "spec": j.spec, "state": states[j.index].state, "detail": states[j.index].detail,
                      "error": j.error} for j in jobs]}


def suite_status(suite: Suite, runs_dir: Path, out=None, data_roots: dict[str, Path] | None = None) -> dict[str, int]:
    out = out or sys.stdout
    jobs = suite.resolve(data_roots)
    states = {j.index: job_state(j, runs_dir) for j in jobs}
    print(f"suite {suite.name} ({suite.path}): {len(jobs)} jobs, runs under {runs_dir}/", file=out)
    print_jobs(jobs, states, out)
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    order = ["done", "running", "queued", "failed", "incomplete", "pending", "invalid"]
    print("\n" + ", ".join(f"{counts[s]} {s}" for s in order if s in counts), file=out)
    unfound = sorted({j.config.data.name for j in jobs if j.data_error and states[j.index].state == "pending"})
    if unfound:
        print(f"the data of {', '.join(unfound)} was not found here, and a run id holds its fingerprint: those "
              "jobs may be done under other ids; give --data-root NAME=PATH as to suite run (or the dataset's "
              "environment variable)", file=out)
    left = job_time_left(jobs, states, runs_dir)
    if left:
        print(f"job time left: {left} of one worker at the pace of the finished runs (divide by the workers)",
              file=out)
    return counts


def learn_pace(pace, jobs: list[Job], states: dict[int, JobState], runs_dir: Path) -> None:
    """Feed ``pace`` (suite_progress.Pace) the job time each finished run recorded (``metrics.json`` timing)."""
    from fairbench.runs.record import RunRecord

    for job in jobs:
        if states[job.index].state == "done" and job.run_id:
            try:
                seconds = RunRecord(runs_dir / job.run_id).metrics().get("timing", {}).get("total_s")
            except (OSError, ValueError):
                seconds = None
            pace.ended(job, seconds)


def job_time_left(jobs: list[Job], states: dict[int, JobState], runs_dir: Path) -> str:
    """How long the jobs not done should take one worker, at the job time per training FLOP that
    the finished runs recorded; "" when no finished run says."""
    from fairbench.suites.launchers.suite_progress import Pace

    pace = Pace()
    learn_pace(pace, jobs, states, runs_dir)
    pace.expect([j for j in jobs if j.config is not None and states[j.index].state != "done"], workers=1)
    return pace.left()
