"""The ``local`` launcher: the jobs of a suite on this machine, one at a time or in a pool.

- One job at a time (the default on the CPU or one GPU) runs in this process, with a progress
  bar per epoch.
- On GPUs: one worker process per GPU slot, pinned with ``CUDA_VISIBLE_DEVICES`` round-robin over
  ``gpus`` (default: every visible GPU), ``jobs_per_gpu`` workers on each (small models leave a GPU
  mostly idle, so several runs share it well).
- On the CPU: ``jobs`` worker processes with ``threads`` torch threads each (default: the cores
  this process may use, divided among the workers, never fewer than one): torch's default of
  one thread per core in every worker oversubscribes the machine.

Every job runs in a fresh process (``python -m fairbench.launchers.local``): a crash, an
out-of-memory kill or a CUDA error ends that job only, and its GPU slot goes to the next job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import Field

from fairbench.launchers.base import JobOutcome, LaunchContext, Launcher, record_outcome, train_job, visible_gpus
from fairbench.registry import register_launcher


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


@register_launcher("local")
class LocalLauncher(Launcher):
    """Processes on this machine: one job at a time, or a pool pinned to GPUs / with fixed CPU threads."""

    class Options(Launcher.Options):
        #: worker processes (default: one per GPU slot on GPUs, 1 on the CPU)
        jobs: int | None = Field(default=None, ge=1)
        #: GPUs to use, as CUDA_VISIBLE_DEVICES entries (default: every visible one); [] = CPU only
        gpus: list[str] | None = None
        jobs_per_gpu: int = Field(default=1, ge=1)
        #: torch threads per worker (default: usable cores // workers, at least 1)
        threads: int | None = Field(default=None, ge=1)

    def plan(self, todo) -> tuple[list[str | None], int]:
        """The workers' GPU slots (None = CPU worker) and each worker's thread count."""
        opts = self.options
        cpu_only = opts.gpus == [] or (todo and all(j.config.train.device == "cpu" for j in todo))
        gpus = [] if cpu_only else (opts.gpus if opts.gpus is not None else visible_gpus())
        if gpus:
            workers = opts.jobs or len(gpus) * opts.jobs_per_gpu
            slots: list[str | None] = [gpus[k % len(gpus)] for k in range(workers)]
        else:
            slots = [None] * (opts.jobs or 1)
        threads = opts.threads or max(1, usable_cores() // len(slots))
        return slots, threads

    def describe(self, n_jobs: int) -> str:
        return "local processes"

    def launch(self, todo, ctx: LaunchContext) -> None:
        slots, threads = self.plan(todo)
        if len(slots) == 1 and self.options.gpus is None and self.options.threads is None:
            _run_here(todo, ctx)  # one at a time on this machine's one GPU or its CPU: nothing to pin
        else:
            _run_pool(todo, ctx, slots, threads, self.options.threads is not None)


def _run_here(todo, ctx: LaunchContext) -> None:
    """One job after the other in this process (progress bars per epoch)."""
    from fairbench.launchers.progress import suite_reporter

    for job in todo:
        ctx.progress.begin(job)
        t0 = time.time()
        outcome = train_job(job.config.model_dump(mode="json"), ctx.runs_dir, suite_reporter(ctx.progress, job))
        record_outcome(ctx, job, outcome, time.time() - t0)


def _run_pool(todo, ctx: LaunchContext, slots: list[str | None], threads: int, explicit_threads: bool) -> None:
    from fairbench.run_store import RunRecord

    logs = ctx.report_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    where = ", ".join(f"GPU {s}" for s in dict.fromkeys(s for s in slots if s is not None)) or "the CPU"
    per_gpu = f" ({len(slots) // max(1, len(set(slots)))} per GPU)" if slots[0] is not None else ""
    ctx.progress.log(f"{len(todo)} jobs in {len(slots)} worker processes on {where}{per_gpu}, "
                     f"{threads} torch thread(s) each; logs in {logs}/")
    queue = list(todo)
    free = list(range(len(slots)))
    running: dict[int, tuple] = {}  # slot -> (job, process, result file, log handle, start)
    try:
        while queue or running:
            while queue and free:
                slot, job = free.pop(0), queue.pop(0)
                running[slot] = _start_worker(job, ctx, slots[slot], threads, explicit_threads, logs)
                ctx.progress.begin(job)
            time.sleep(0.5)
            for slot, (job, proc, result, log, t0) in list(running.items()):
                if proc.poll() is None:
                    status = RunRecord(ctx.runs_dir / job.run_id).status()
                    if status.get("epoch") is not None:
                        ctx.progress.epoch(job, status["epoch"], f"epoch {status['epoch'] + 1}/{job.config.train.epochs}")
                    continue
                log.close()
                record_outcome(ctx, job, _read_outcome(result, proc.returncode), time.time() - t0)
                del running[slot]
                free.append(slot)
    except KeyboardInterrupt:
        # A Ctrl-C at the terminal reaches the workers too: each records "interrupted" and lets go of
        # its run. A second SIGINT could cut that short, so they are sent one only if they linger.
        procs = [proc for _, proc, *_ in running.values()]
        for escalate in (lambda proc: proc.send_signal(signal.SIGINT), lambda proc: proc.kill()):
            deadline = time.monotonic() + 30
            for proc in procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    escalate(proc)
        for proc in procs:
            proc.wait()
        raise


def _start_worker(job, ctx: LaunchContext, gpu: str | None, threads: int, explicit: bool, logs: Path):
    config = job.config.model_dump(mode="json")
    if explicit or not config["train"].get("threads"):  # train.threads is not part of the run id
        config["train"]["threads"] = threads
    threads = config["train"]["threads"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        if config["train"]["device"].startswith("cuda:"):  # the one visible GPU is cuda:0 in the worker
            config["train"]["device"] = "cuda"
    elif config["train"]["device"] == "auto":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU worker stays off the GPUs
    fd, result = tempfile.mkstemp(prefix=f".{job.run_id}.", suffix=".outcome", dir=logs)
    os.close(fd)
    log = open(logs / f"{job.run_id}.log", "a")
    proc = subprocess.Popen([sys.executable, "-m", "fairbench.launchers.local", result], stdin=subprocess.PIPE,
                            stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    proc.stdin.write(json.dumps({"config": config, "runs_dir": str(ctx.runs_dir)}))
    proc.stdin.close()
    return job, proc, Path(result), log, time.time()


def _read_outcome(result: Path, returncode: int) -> JobOutcome:
    try:
        text = result.read_text()
        result.unlink()
        if text:
            return JobOutcome.from_json(text)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        pass
    result.unlink(missing_ok=True)
    how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    return JobOutcome("failed", f"the worker process ended with {how} before recording an outcome (see its log)")


def _worker_main() -> None:
    """A pool worker: one job from stdin, its outcome to the file named on the command line."""
    from fairbench.run_store import atomic_write_bytes

    request = json.loads(sys.stdin.read())
    try:
        outcome = train_job(request["config"], Path(request["runs_dir"]))
    except KeyboardInterrupt as exc:  # the runner's says what became of the run folder
        outcome = JobOutcome("failed", str(exc) or "interrupted")
    atomic_write_bytes(Path(sys.argv[1]), outcome.to_json().encode())


if __name__ == "__main__":
    _worker_main()
