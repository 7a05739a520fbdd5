"""What a suite run shows while it trains: one bar for the suite and one per running job (rich on a
terminal, log lines otherwise), and a runner Reporter that draws a job's epochs on it."""

from __future__ import annotations

import contextlib
import statistics
import sys
from typing import TYPE_CHECKING, Any

from fairbench.training.run_progress import Reporter, _Bars, _epoch_line

if TYPE_CHECKING:
    from fairbench.suites.suite import Job


class SuiteProgress:
    """One bar for the whole suite and one per running job (rich on a terminal, log lines otherwise)."""

    def __init__(self, total: int, already_done: int, quiet: bool = False, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.total, self.finished = total, already_done
        self.pace = Pace()
        self.rich = not quiet and self.console.is_terminal
        self._tasks: dict[int, Any] = {}
        self._progress = None
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console)
            self._overall = self._progress.add_task("suite", total=total, completed=already_done, info="")

    def __enter__(self) -> "SuiteProgress":
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.stop()

    def log(self, message: str) -> None:
        if self.rich:
            self._progress.console.print(message, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def begin(self, job: "Job") -> None:
        self.log(f"job {job.index}/{self.total} start {job.run_id}: {job.describe()}")
        if self.rich:
            self._tasks[job.index] = self._progress.add_task(f"  {job.method} s{job.seed}", total=job.config.train.epochs,
                                                             info="")
        else:
            self._tasks[job.index] = None

    def epoch(self, job: "Job", completed: float, info: str = "") -> None:
        if self.rich and job.index in self._tasks:
            self._progress.update(self._tasks[job.index], completed=completed, info=info)

    def end(self, job: "Job", state: str, detail: str = "", seconds: float | None = None) -> None:
        task = self._tasks.pop(job.index, None)
        if self.rich and task is not None:
            self._progress.remove_task(task)
        self.finished += 1
        self.pace.ended(job, seconds if state == "done" and not detail else None)
        left = self.pace.left()
        left = f", {left} left at this pace" if left else ""
        if self.rich:
            self._progress.update(self._overall, completed=self.finished, info=left.lstrip(", "))
        took = f" in {seconds:.0f}s" if seconds is not None else ""
        self.log(f"job {job.index}/{self.total} {state} {job.run_id}{took}" + (f": {detail}" if detail else "")
                 + f" [{self.finished}/{self.total} finished{left}]")


def _budget(job: "Job") -> float | None:
    """The FLOPs a job trains: its budget times the share a halving rung trains of it."""
    train = job.config.train if job.config is not None else None
    budget = getattr(train, "budget_flops", None)
    return budget * (train.stop_after_share or 1.0) if budget else None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"~{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"~{max(1, minutes)} min"


class Pace:
    """How long the jobs not yet ended should take, from those that ended here: a job with a FLOPs
    budget at the median seconds per FLOP of the finished ones (a run resumed near its end, or cut
    short, moves a median little), any other at their median seconds; spread over the workers.
    Nothing until a launcher says what it runs (:meth:`expect`) and a job of each kind has ended."""

    def __init__(self) -> None:
        self.pending: dict[int, "Job"] = {}
        self.workers = 1
        self.per_flop: list[float] = []
        self.per_job: list[float] = []

    def expect(self, jobs: list["Job"], workers: int) -> None:
        self.pending = {job.index: job for job in jobs}
        self.workers = max(1, workers)

    def ended(self, job: "Job", seconds: float | None) -> None:
        self.pending.pop(job.index, None)
        if seconds is None or seconds <= 0:
            return
        budget = _budget(job)
        if budget:
            self.per_flop.append(seconds / budget)
        else:
            self.per_job.append(seconds)

    def left(self) -> str:
        if not self.pending or any(job.config.train.stop_after_share for job in self.pending.values()):
            return ""  # done, or a halving rung: which trials train on depends on its ranking
        total = 0.0
        for job in self.pending.values():
            budget = _budget(job)
            if budget and self.per_flop:
                total += budget * statistics.median(self.per_flop)
            elif not budget and self.per_job:
                total += statistics.median(self.per_job)
            else:
                return ""  # a kind of job none of which has ended yet
        return _duration(total / min(self.workers, len(self.pending)))


def suite_reporter(progress: SuiteProgress, job: "Job") -> Reporter:
    """A runner Reporter that draws the job's epochs on the suite's progress display."""
    class _JobBars(_Bars):
        def __init__(self, epochs: int, batches: int):
            self.epochs, self.batches, self.current = epochs, max(1, batches), 0

        def start_epoch(self, epoch):
            self.current = epoch

        def advance_batch(self, step, sums):
            progress.epoch(job, self.current + step / self.batches, f"epoch {self.current + 1}/{self.epochs}")

        def end_epoch(self, epoch, train, val, selected):
            progress.epoch(job, epoch + 1, "")
            progress.log("    " + _epoch_line(epoch, self.epochs, train, val, selected))

    class _JobReporter(Reporter):
        def log(self, message):
            progress.log("    " + message)

        @contextlib.contextmanager
        def training(self, epochs, batches_per_epoch, n_val):
            yield _JobBars(epochs, batches_per_epoch)

    return _JobReporter(quiet=True, console=progress.console)
