"""A run folder's lifecycle as one run sees it, under the run's lease: whether it may be trained
(done, running, unreadable), where it is written (its own folder, or beside it in a hidden folder
under ``--force`` until the new run is done), the stale hidden folders of earlier ``--force`` runs,
and the swap that puts a finished replacement in place.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fairbench.runs.lease import check_owned
from fairbench.runs.record import RunRecord, read_status


class RunAlreadyDone(Exception):
    def __init__(self, path: Path):
        super().__init__(f"this configuration already ran to completion: {path} (use --force to run it again)")
        self.path = path


class RunRefused(ValueError):
    """The run folder is in a state this run must not touch (in use, unreadable, foreign checkpoint)."""


def existing_state(path: Path, force: bool) -> str | None:
    """State of an existing run folder, or an error if this run must leave it alone."""
    if not path.exists():
        return None
    if not path.is_dir():
        raise RunRefused(f"{path} exists and is not a run folder; move it away")
    status = read_status(path)
    state = status.get("state")
    if state == "running":
        raise RunRefused(f"{path} is being trained right now by process {status.get('pid')} on {status.get('host')}; "
                         "wait for it to finish (or stop it) before running this configuration")
    if state == "done" and not force:
        raise RunAlreadyDone(path)
    if (path / "status.json").is_file() and status.get("unreadable") and not force:
        raise RunRefused(f"{path / 'status.json'} is unreadable, so whether the run finished is unknown; "
                         "fix or remove that file, or pass --force to train it again (the folder is kept until "
                         "the new run has finished)")
    return state


@dataclass
class Placement:
    """Where a run is written: ``final`` itself, or (``aside``: ``--force`` over an existing run) a
    hidden folder beside it, owned through ``final``'s lease and swapped in when done."""

    final: Path
    path: Path
    aside: bool = False
    #: the evaluations of the run being replaced: they belong to its weights and go with it
    discarded: list[str] = field(default_factory=list)


def place(final: Path, force: bool, existing: str | None, is_main: bool = True) -> Placement:
    """Where the run of folder ``final`` (in state ``existing``, :func:`existing_state`) is written."""
    if not (force and existing is not None):
        return Placement(final, final)
    discarded = [p.name for p in RunRecord(final).evaluation_folders()] if is_main else []
    return Placement(final, final.parent / f".{final.name}.force-{os.getpid()}", True, discarded)


def remove_stale(placement: Placement) -> None:
    """Delete the hidden folders of earlier ``--force`` runs of this run (the caller holds its lease)."""
    for stale in placement.final.parent.glob(f".{placement.final.name}.*"):
        if stale.is_dir() and stale != placement.path:
            shutil.rmtree(stale, ignore_errors=True)


def swap_in(new: Path, final: Path) -> None:
    """Put the finished run ``new`` where ``final`` is: one atomic exchange of the two folders
    (Linux renameat2), else rename the old one aside first; then delete the old one.

    Only while this process still owns ``final``'s lease: one that lost it (frozen for longer than
    the lease, then taken over) raises :class:`LeaseLost` and touches neither folder."""
    check_owned(final)
    backup = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        exchanged = libc.renameat2(-100, os.fsencode(new), -100, os.fsencode(final), 2) == 0  # AT_FDCWD, RENAME_EXCHANGE
    except (OSError, AttributeError):
        exchanged = False
    if exchanged:
        os.replace(new, backup)  # ``new`` now holds the old run
    else:
        os.replace(final, backup)
        os.replace(new, final)
    shutil.rmtree(backup, ignore_errors=True)
