"""The ``slurm`` launcher: a suite's pending jobs as one Slurm job array, through submitit.

One ``suite run`` submits one array, one task per pending run. Each task trains its run through
the same runner and run store as a local run, under the run's lease, so a task that finds its run
finished or owned by another live process ends at once. A task signalled before its time limit or
at preemption is requeued and resumes from its last checkpoint; a task killed outright leaves its
run ``incomplete`` for the next ``suite run``. Options, logs and what happens to a task:
docs/clusters.md#slurm and docs/clusters.md#waiting-and-what-happens-to-a-slurm-task
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from fairbench.suites.launchers.base import JobOutcome, LaunchContext, Launcher, train_job
from fairbench.registry import register_launcher
from fairbench.runs.job_state import job_state, mark_queued, missing_evaluations


def parse_time(value: str | int) -> int:
    """Slurm's time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) -> whole minutes (at least 1)."""
    if isinstance(value, int):
        minutes = value
    else:
        text = value.strip()
        days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
        parts = [int(p) for p in rest.split(":")]
        if days != "0":
            seconds = int(days) * 86400 + sum(v * m for v, m in zip(parts, (3600, 60, 1)))
        elif len(parts) == 1:
            seconds = parts[0] * 60
        elif len(parts) == 2:
            seconds = parts[0] * 60 + parts[1]
        else:
            seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
        minutes = -(-seconds // 60)
    if minutes < 1:
        raise ValueError(f"time limit {value!r} is under a minute")
    return minutes


def sbatch_pairs(lines: list[str]) -> dict[str, Any]:
    """``["--constraint=a100", "exclusive"]`` -> ``{"constraint": "a100", "exclusive": True}``."""
    out: dict[str, Any] = {}
    for line in lines:
        key, sep, value = line.strip().removeprefix("#SBATCH").strip().lstrip("-").partition("=")
        if not key or " " in key:
            raise ValueError(f"extra sbatch option {line!r}: expected --name=value or --flag")
        out[key] = value if sep else True
    return out


@register_launcher("slurm")
class SlurmLauncher(Launcher):
    """A Slurm job array through submitit; preempted and timed-out tasks are requeued and resume."""

    class Options(Launcher.Options):
        partition: str | None = None
        #: per task: minutes, or HH:MM:SS / D-HH:MM:SS
        time: int | str = "4:00:00"
        gpus_per_job: int = Field(default=0, ge=0)
        cpus_per_job: int = Field(default=4, ge=1)
        #: memory per task, GB (default: the partition's default)
        mem_gb: float | None = Field(default=None, gt=0)
        #: array tasks running at once
        array_parallelism: int = Field(default=64, ge=1)
        account: str | None = None
        qos: str | None = None
        #: more sbatch options, e.g. ["--constraint=a100", "--exclusive"]
        sbatch: list[str] = []
        #: shell lines run before the job (module load ..., source .venv/bin/activate)
        setup: list[str] = []
        job_name: str | None = None
        #: the USR2 warning before the time limit, seconds (time to save and requeue)
        signal_delay_s: int = Field(default=120, ge=10)
        #: requeues after hitting the time limit (preemptions do not count)
        max_timeouts: int = Field(default=3, ge=0)
        #: the command that starts Python on the nodes (default: this interpreter)
        python: str | None = None
        #: block until every task has ended, then run the evaluations and write the reports
        wait: bool = False
        #: seconds between looks at the run store while waiting
        poll_s: float = Field(default=30.0, gt=0)

        @field_validator("time")
        @classmethod
        def _time(cls, v):
            parse_time(v)
            return v

        @field_validator("sbatch")
        @classmethod
        def _sbatch(cls, v):
            sbatch_pairs(v)
            return v

    def describe(self, n_jobs: int) -> str:
        o = self.options
        where = f"partition {o.partition}" if o.partition else "the default partition"
        return (f"a Slurm job array of {n_jobs} tasks on {where} ({o.gpus_per_job} GPU, {o.cpus_per_job} CPUs, "
                f"time {o.time} each; {o.array_parallelism} at once)")

    def executor_parameters(self, suite_name: str) -> dict[str, Any]:
        """What ``SlurmExecutor.update_parameters`` gets (submitit writes them into the sbatch script)."""
        o = self.options
        params: dict[str, Any] = {
            "job_name": o.job_name or f"fairbench-{suite_name}",
            "time": parse_time(o.time),
            "nodes": 1,
            "ntasks_per_node": 1,
            "cpus_per_task": o.cpus_per_job,
            "array_parallelism": o.array_parallelism,
            "signal_delay_s": o.signal_delay_s,
        }
        optional = {"partition": o.partition, "account": o.account, "qos": o.qos,
                    "gpus_per_node": o.gpus_per_job or None,
                    "mem": f"{int(o.mem_gb * 1024)}MB" if o.mem_gb is not None else None}
        params.update({k: v for k, v in optional.items() if v is not None})
        if o.sbatch:
            params["additional_parameters"] = sbatch_pairs(o.sbatch)
        if o.setup:
            params["setup"] = list(o.setup)
        return params

    def executor(self, folder: Path, suite_name: str):
        import submitit

        from fairbench.config import ConfigError

        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise ConfigError("the slurm launcher needs Slurm's commands (sbatch, srun) on this machine: run "
                               "`fairbench suite run` on the cluster's login node (or scripts/slurm-local.sh start)")
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.options.max_timeouts,
                                          python=self.options.python)
        executor.update_parameters(**self.executor_parameters(suite_name))
        return executor

    def launch(self, todo, ctx: LaunchContext) -> None:
        folder = ctx.report_dir / "slurm"
        executor = self.executor(folder, ctx.suite.name)
        configs = []
        for job in todo:
            config = job.config.model_dump(mode="json")
            if not config["train"].get("threads"):  # the task's CPUs, not every core of the node
                config["train"]["threads"] = self.options.cpus_per_job
            configs.append(config)
        task = TrainOnSlurm(str(ctx.runs_dir), {name: str(path) for name, path in ctx.data_roots.items()})
        evaluations = [[spec.model_dump(mode="json") for spec in job.evaluations] for job in todo]
        jobs = executor.map_array(task, configs, [job.run_id for job in todo], evaluations)
        array_id = jobs[0].job_id.split("_")[0]
        for job, slurm_job in zip(todo, jobs):
            mark_queued(ctx.runs_dir, job.run_id, detail=f"slurm job {slurm_job.job_id}", slurm_job=slurm_job.job_id)
            ctx.result.submitted.append(job.index)
        script = folder / f"{array_id}_submission.sh"
        ctx.progress.log(f"submitted Slurm job {array_id}: {len(todo)} tasks ({self.describe(len(todo))}); "
                         f"sbatch script and logs in {folder}/")
        if self.options.wait:
            self._wait(todo, ctx, array_id)
        elif not script.is_file():
            ctx.progress.log(f"(submitit wrote no {script.name}: look in {folder}/)")

    def _wait(self, todo, ctx: LaunchContext, array_id: str) -> None:
        """Until every task has ended, as the run store says. The scheduler is asked only whether a
        task is still in its queue, so that a task cancelled before it wrote anything, or killed
        without a word, does not hang the wait."""
        tasks = {job.index: f"{array_id}_{k}" if len(todo) > 1 else array_id for k, job in enumerate(todo)}
        open_jobs = {job.index: job for job in todo}
        started = time.time()
        for job in todo:
            ctx.progress.begin(job)
        while open_jobs:
            time.sleep(self.options.poll_s)
            in_queue = _squeue(array_id)
            for index, job in list(open_jobs.items()):
                state = job_state(job, ctx.runs_dir)
                if state.state == "running" or (state.state in ("queued", "incomplete", "pending")
                                                 and (in_queue is None or tasks[index] in in_queue)):
                    continue
                del open_jobs[index]
                ctx.result.submitted.remove(index)
                if state.state == "done":
                    ctx.result.ran.append(index)
                    ctx.progress.end(job, "done", "", time.time() - started)
                else:
                    detail = state.detail or "left the Slurm queue without finishing"
                    ctx.result.failed[index] = f"{state.state}: {detail}"
                    ctx.progress.end(job, state.state, detail, time.time() - started)


def _squeue(array_id: str) -> set[str] | None:
    """The array's tasks still in Slurm's queue (pending or running), or None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return set() if "Invalid job id" in out.stderr else None
    return set(out.stdout.split())


def _checkpointable():
    import submitit

    return submitit.helpers.Checkpointable


class TrainOnSlurm(_checkpointable()):
    """One array task: train one run. Checkpointable: on preemption or at the time limit, submitit
    calls :meth:`checkpoint` and requeues the task with the same arguments; the run resumes from
    its last checkpoint."""

    def __init__(self, runs_dir: str, data_roots: dict[str, str] | None = None):
        self.runs_dir = runs_dir
        self.data_roots = data_roots or {}
        self.requeued = False

    def __call__(self, config: dict[str, Any], run_id: str, evaluations: list[dict[str, Any]] = ()) -> str:
        from fairbench.runs.lease import RunBusy, hold, lease_seconds

        self.requeued = False
        run_dir = Path(self.runs_dir) / run_id
        try:
            # a task has nothing else to do: it waits long enough to take over from an owner that was
            # killed moments ago on another node (its heartbeat must stay still for a whole lease)
            with hold(run_dir, wait=lease_seconds() * 4 / 3 + 5):
                _link_logs(run_dir)
                try:
                    outcome = train_job(config, Path(self.runs_dir))
                    if outcome.state in ("trained", "done-before"):  # on the node, not on the login node
                        _evaluate(run_dir, evaluations, self.data_roots)
                    return outcome.to_json()
                except SystemExit:
                    if self.requeued:  # submitit requeued this task and exits: the run waits for it
                        _record_requeue(Path(self.runs_dir), run_id)
                    raise
        except RunBusy as busy:
            return JobOutcome("busy", str(busy)).to_json()

    def checkpoint(self, config: dict[str, Any], run_id: str, evaluations: list[dict[str, Any]] = ()):
        """The runner's last checkpoint is on disk already: requeue with the same arguments."""
        self.requeued = True
        return super().checkpoint(config, run_id, evaluations)


def _evaluate(run_dir: Path, evaluations: list[dict[str, Any]], data_roots: dict[str, str]) -> None:
    """The suite's cross-dataset evaluations of a finished run, in its Slurm task; one that fails is
    reported in the task's log and tried again by the next ``suite run``."""
    from fairbench.evaluation.cross_eval import evaluate_run
    from fairbench.suites.suite import EvaluationSpec

    specs = [EvaluationSpec.model_validate(spec) for spec in evaluations]  # they travel as JSON
    for spec in missing_evaluations(run_dir, specs):
        root = data_roots.get(spec.dataset)
        try:
            evaluate_run(run_dir, spec.dataset, data_root=Path(root) if root else None, split=spec.split,
                         options=dict(spec.options))
        except Exception as exc:  # one missing dataset must not fail the task
            print(f"fairbench: evaluation on {spec.dataset} {spec.split} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)


def _link_logs(run_dir: Path) -> None:
    """``slurm-<job>.out`` / ``.err`` in the run folder, pointing at submitit's logs of this task."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        paths = env.paths
    except Exception:  # not inside a submitit job (tests call the task directly)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    for source, suffix in ((paths.stdout, "out"), (paths.stderr, "err")):
        link = run_dir / f"slurm-{env.job_id}.{suffix}"
        if not link.is_symlink():
            try:
                link.symlink_to(os.path.relpath(source, run_dir))
            except OSError:
                pass


def _record_requeue(runs_dir: Path, run_id: str) -> None:
    import json

    from fairbench.runs.store import atomic_write_json, now

    job_id = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    name = f"{job_id}_{task}" if task else job_id
    status_path = runs_dir / run_id / "status.json"
    try:
        status = json.loads(status_path.read_text())
    except (OSError, ValueError):
        status = {}
    reason = f"preempted or at its time limit: Slurm job {name} requeued; it resumes from the last checkpoint"
    status.update(state="incomplete", reason=reason, updated=now())
    status.pop("error", None)
    status.pop("traceback", None)
    atomic_write_json(status_path, status)
    time.sleep(0.01)  # the queue record must be newer than the status written just now
    mark_queued(runs_dir, run_id, detail=f"slurm job {name}, requeued", slurm_job=name)
    print(f"fairbench: {reason}", file=sys.stderr, flush=True)


def sbatch_script_lines(script: Path) -> list[str]:
    """The ``#SBATCH`` lines of a submission script, without the prefix (for checks and tests)."""
    return [shlex.split(line)[1] for line in Path(script).read_text().splitlines() if line.startswith("#SBATCH")]
