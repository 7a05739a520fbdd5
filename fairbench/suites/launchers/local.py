"""The ``local`` launcher: the jobs of a suite on this machine, one at a time or in a pool.

One job at a time (the default on the CPU or one GPU) runs in this process, with a progress bar
per epoch. A pool has one worker process per GPU slot (``CUDA_VISIBLE_DEVICES`` round-robin,
``jobs_per_gpu`` on each) or ``jobs`` CPU workers with the cores shared out as torch threads, so
that workers do not oversubscribe the machine. A worker (``--serve``) runs up to
``jobs_per_process`` jobs so that Python and torch start once per worker; a crash ends only the
job it was running. Options and guarantees: docs/clusters.md#local-processes
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import Field

from fairbench.suites.launchers.base import JobOutcome, LaunchContext, Launcher, record_outcome, train_job, visible_gpus
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
        #: jobs a worker process runs before a fresh one takes its slot (1: a fresh process per job)
        jobs_per_process: int = Field(default=8, ge=1)

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
            _run_pool(todo, ctx, slots, threads, self.options.threads is not None, self.options.jobs_per_process)


def _run_here(todo, ctx: LaunchContext) -> None:
    """One job after the other in this process (progress bars per epoch)."""
    from fairbench.suites.launchers.suite_progress import suite_reporter

    from fairbench.training import timing

    ctx.progress.pace.expect(todo, 1)
    for job in todo:
        ctx.progress.begin(job)
        t0 = time.time()
        timing.begin_job(t0)  # its metrics' timing starts here, not at this process's start
        outcome = train_job(job.config.model_dump(mode="json"), ctx.runs_dir, suite_reporter(ctx.progress, job))
        record_outcome(ctx, job, outcome, time.time() - t0)


def longest_first_within_seed(todo: list) -> list:
    """The jobs in suite order (seed-major: an interrupted suite has whole seeds), but within a seed
    the largest training budget first: a long job started last runs alone while the other workers
    idle (the quickstart's last FineFACE job at 5.7x the budget did: ~1.4 % of its wall time)."""
    seeds: dict[int, int] = {}
    for job in todo:
        seeds.setdefault(job.config.train.seed, len(seeds))
    return sorted(todo, key=lambda job: (seeds[job.config.train.seed], -(job.config.train.budget_flops or 0)))


def _run_pool(todo, ctx: LaunchContext, slots: list[str | None], threads: int, explicit_threads: bool,
              jobs_per_process: int = 1) -> None:
    from fairbench.runs.record import RunRecord

    logs = ctx.report_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    where = ", ".join(f"GPU {s}" for s in dict.fromkeys(s for s in slots if s is not None)) or "the CPU"
    per_gpu = f" ({len(slots) // max(1, len(set(slots)))} per GPU)" if slots[0] is not None else ""
    ctx.progress.log(f"{len(todo)} jobs in {len(slots)} worker processes on {where}{per_gpu}, "
                     f"{threads} torch thread(s) each; logs in {logs}/")
    queue = longest_first_within_seed(todo)
    ctx.progress.pace.expect(queue, len(slots))
    free = list(range(len(slots)))
    running: dict[int, tuple] = {}  # slot -> (job, result file, start)
    workers: dict[int, _Worker] = {}  # slot -> its worker process, kept between jobs (< 0: retired ones)
    try:
        while queue or running:
            while queue and free:
                slot, job = free.pop(0), queue.pop(0)
                running[slot] = _start_job(job, ctx, slot, slots[slot], threads, explicit_threads, logs, workers,
                                           jobs_per_process)
                ctx.progress.begin(job)
            time.sleep(0.5)
            _reap_retired(workers)
            for slot, (job, result, t0) in list(running.items()):
                proc = workers[slot].proc
                exited = proc.poll() is not None  # a crash, or the end of its last job
                if not exited and not _has_outcome(result):
                    status = RunRecord(ctx.runs_dir / job.run_id).status
                    if status.get("epoch") is not None:
                        ctx.progress.epoch(job, status["epoch"], f"epoch {status['epoch'] + 1}/{job.config.train.epochs}")
                    continue
                if exited:
                    workers.pop(slot).close()
                record_outcome(ctx, job, _read_outcome(result, proc.returncode if exited else 0), time.time() - t0)
                del running[slot]
                free.append(slot)
        for worker in workers.values():  # end of input: each exits after the job it has (none)
            worker.close()
        for worker in workers.values():
            worker.proc.wait()
    except KeyboardInterrupt:
        # A Ctrl-C at the terminal reaches the workers too: each records "interrupted" and lets go of
        # its run. A second SIGINT could cut that short, so they are sent one only if they linger.
        for worker in workers.values():
            worker.close()
        procs = [worker.proc for worker in workers.values()]
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


def _reap_retired(workers: dict[int, "_Worker"]) -> None:
    """Forget the retired workers (negative keys) that have exited: ``poll`` reaps each, so that a
    long suite does not collect a zombie process per retired worker until its end."""
    for key in [key for key, worker in workers.items() if key < 0 and worker.proc.poll() is not None]:
        del workers[key]


class _Worker:
    """A pool's worker process on one slot: jobs go to it one JSON line at a time on its stdin."""

    def __init__(self, key: tuple, env: dict[str, str], logs: Path, jobs_per_process: int):
        self.key, self.served = key, 0
        self.log = open(logs / "workers.log", "a")  # what a worker prints between its jobs
        self.proc = subprocess.Popen([sys.executable, "-m", "fairbench.suites.launchers.local", "--serve",
                                      str(jobs_per_process)], stdin=subprocess.PIPE, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, text=True)
        self.limit = jobs_per_process

    def takes(self, key: tuple) -> bool:
        return self.key == key and self.served < self.limit and self.proc.poll() is None

    def send(self, request: dict) -> bool:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):  # it ended meanwhile
            return False
        self.served += 1
        return True

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.log.close()


def _start_job(job, ctx: LaunchContext, slot: int, gpu: str | None, threads: int, explicit: bool, logs: Path,
               workers: dict[int, _Worker], jobs_per_process: int):
    """Hand ``job`` to its slot's worker, started afresh when there is none that can take it."""
    config, env = _job_config(job, gpu, threads, explicit)
    # what a worker sets once for the whole process: jobs that differ in it do not share one
    key = (env.get("CUDA_VISIBLE_DEVICES"), config["train"]["threads"], config["train"].get("deterministic"))
    fd, result = tempfile.mkstemp(prefix=f".{job.run_id}.", suffix=".outcome", dir=logs)
    os.close(fd)
    request = {"config": config, "runs_dir": str(ctx.runs_dir), "result": result,
               "log": str(logs / f"{job.run_id}.log")}
    worker = workers.get(slot)
    if worker is None or not worker.takes(key) or not worker.send(request):
        if worker is not None:  # it ends at the end of its input; reaped with the others
            worker.close()
            workers[min(0, *workers) - 1] = worker
        worker = workers[slot] = _Worker(key, env, logs, jobs_per_process)
        if not worker.send(request):
            worker.proc.wait()  # it could not even start: the job fails with its exit code
    return job, Path(result), time.time()


def _has_outcome(result: Path) -> bool:
    try:
        return result.stat().st_size > 0  # written whole by an atomic rename
    except FileNotFoundError:
        return False


def _job_config(job, gpu: str | None, threads: int, explicit: bool) -> tuple[dict, dict[str, str]]:
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
    return config, env


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


@contextlib.contextmanager
def _output_to(log: Path):
    """This process's stdout and stderr (file descriptors 1 and 2, C libraries' output too) into ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _serve(jobs_per_process: int) -> None:
    """A pool worker: jobs from stdin, one JSON line each, until its end or ``jobs_per_process`` jobs;
    each job's output to its log, its outcome to its result file. A Ctrl-C while a job runs ends
    the worker after recording that job (the runner's message says what became of the run folder)."""
    from fairbench.runs.store import atomic_write_bytes
    from fairbench.training import timing

    for served in range(jobs_per_process):
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # idle: nothing to record
            return
        if not line.strip():
            return
        request = json.loads(line)
        # the first job's time starts at the process's start (its imports are that job's)
        timing.begin_job(None if served else timing.process_started())
        interrupted = False
        with _output_to(Path(request["log"])):
            try:
                outcome = train_job(request["config"], Path(request["runs_dir"]))
            except KeyboardInterrupt as exc:
                outcome, interrupted = JobOutcome("failed", str(exc) or "interrupted"), True
        atomic_write_bytes(Path(request["result"]), outcome.to_json().encode())
        if interrupted:
            return


if __name__ == "__main__":
    _serve(int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--serve" else 1)
