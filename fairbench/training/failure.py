"""What a run that stopped early leaves behind: ``incomplete`` (Ctrl-C, a full disk: resumable) or
``failed`` with the error and traceback in ``status.json``; a ``--force`` replacement's hidden
folder is dropped and the earlier run left untouched; a run that wrote nothing resumable leaves no
half-made folder.
"""

from __future__ import annotations

import shutil
import traceback
from typing import TYPE_CHECKING

from fairbench.runs.lease import LeaseLost
from fairbench.runs.store import RunStoreError, now

if TYPE_CHECKING:
    from fairbench.training.run_state import RunState


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run, with what became of the run folder (the one line the CLI prints)."""


def settle_failure(exc: BaseException, run: "RunState") -> BaseException | None:
    """Record what ``exc`` (being handled) left of the run; the exception to raise instead of it
    (None: ``exc`` itself)."""
    during = f" during epoch {run.epoch + 1}/{run.cfg.train.epochs}" if run.epoch is not None else ""
    final, path = run.placement.final, run.placement.path
    if run.placement.aside:  # the earlier run was never touched: keep it, drop the half-made replacement
        if run.procs.is_main:
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(exc, LeaseLost):  # final is another process's now: not a word about its contents
            return None
        if isinstance(exc, KeyboardInterrupt):
            return RunInterrupted(f"interrupted{during}: the earlier run in {final} is unchanged")
        run.reporter.log(f"the earlier run in {final} is unchanged")
        return None
    started = run.env["started"]
    try:
        if isinstance(exc, KeyboardInterrupt):
            run.writer.set_status("incomplete", reason=f"interrupted{during}; run the same command again to resume",
                                  epoch=run.epoch, started=started, ended=now())
            return RunInterrupted(f"interrupted{during}: {path} is incomplete; run the same command again to "
                                  "resume it")
        if isinstance(exc, RunStoreError):
            if run.created and not (path / "last.pt").is_file():  # nothing to resume: leave no half-made record
                shutil.rmtree(path, ignore_errors=True)
                return None
            run.writer.set_status("incomplete", reason=f"{exc}{during}", epoch=run.epoch, started=started, ended=now())
        else:
            run.writer.set_status("failed", error=f"{type(exc).__name__}: {exc}", epoch=run.epoch,
                                  traceback=traceback.format_exc(), started=started, ended=now())
    except RunStoreError:  # the disk is full or gone: the status stays "running", read as incomplete
        pass
    return None
