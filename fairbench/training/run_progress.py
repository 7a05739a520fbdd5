"""What one run shows while it trains: rich bars with live loss / accuracy per epoch, or plain log
lines with --quiet (a suite's bars: :mod:`fairbench.suites.launchers.suite_progress`)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator

import torch


def _fmt(report: dict[str, Any], key: str) -> str:
    value = report.get(key)
    return "n/a" if value is None or value != value else f"{value:.2f}"


class Reporter:
    def __init__(self, quiet: bool = False, console=None):
        self.quiet = quiet
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console

    def log(self, message: str) -> None:
        if self.quiet:
            print(message, file=sys.stderr, flush=True)
        else:
            self.console.print(message, highlight=False)

    @contextlib.contextmanager
    def training(self, epochs: int, batches_per_epoch: int, n_val: int) -> Iterator["_Bars"]:
        if self.quiet or not self.console.is_terminal:
            yield _LogBars(self, epochs)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console, transient=False,
        )
        with progress:
            yield _RichBars(self, progress, epochs, batches_per_epoch, n_val)


class _Bars:
    def start_epoch(self, epoch: int) -> None: ...
    def advance_batch(self, step: int, sums: dict[str, torch.Tensor]) -> None: ...
    def advance_eval(self, n: int) -> None: ...
    def end_epoch(self, epoch: int, train: dict[str, float], val: dict[str, Any], selected: bool) -> None: ...


def _epoch_line(epoch: int, epochs: int, train: dict[str, float], val: dict[str, Any], selected: bool) -> str:
    losses = " ".join(f"{k}={v:.4f}" for k, v in train.items())
    if not val:
        return f"epoch {epoch + 1}/{epochs}  train {losses}  (not validated: train.validate_every)"
    return (f"epoch {epoch + 1}/{epochs}  train {losses}  val acc={_fmt(val, 'accuracy')} "
            f"worst-group={_fmt(val, 'worst_group_accuracy')} DoB={_fmt(val, 'dob')}" + ("  *selected" if selected else ""))


class _LogBars(_Bars):
    def __init__(self, reporter: Reporter, epochs: int):
        self.reporter, self.epochs = reporter, epochs

    def end_epoch(self, epoch, train, val, selected):
        self.reporter.log(_epoch_line(epoch, self.epochs, train, val, selected))


class _RichBars(_Bars):
    REFRESH_S = 0.5  # reading the running losses syncs the device: do it only this often

    def __init__(self, reporter, progress, epochs, batches, n_val):
        self.reporter, self.progress, self.epochs, self.batches = reporter, progress, epochs, batches
        self.overall = progress.add_task("epochs", total=epochs, info="")
        self.batch_task = progress.add_task("train", total=batches, info="")
        self.eval_task = progress.add_task("val", total=n_val, info="")
        self._last = 0.0

    def start_epoch(self, epoch):
        self.progress.reset(self.batch_task, total=self.batches, description=f"train {epoch + 1}/{self.epochs}", info="")
        self.progress.reset(self.eval_task, total=self.progress.tasks[self.eval_task].total, info="")

    def advance_batch(self, step, sums):
        self.progress.update(self.batch_task, completed=step)
        now = time.monotonic()
        if now - self._last > self.REFRESH_S or step == self.batches:
            self._last = now
            info = " ".join(f"{k}={float(v) / step:.3f}" for k, v in sums.items())
            self.progress.update(self.batch_task, info=info)

    def advance_eval(self, n):
        self.progress.advance(self.eval_task, n)

    def end_epoch(self, epoch, train, val, selected):
        self.progress.advance(self.overall)
        self.progress.update(self.overall, info=f"val acc {_fmt(val, 'accuracy')} worst {_fmt(val, 'worst_group_accuracy')}")
        self.progress.console.print(_epoch_line(epoch, self.epochs, train, val, selected), highlight=False)


def for_rank(reporter: Reporter, procs: Any) -> Reporter:
    """Rank 0's reporter; the other ranks of a torchrun job log nothing (else every line K times)."""
    if procs.is_main:
        return reporter

    class _Silent(Reporter):
        def log(self, message: str) -> None:
            pass

    return _Silent(quiet=True)
