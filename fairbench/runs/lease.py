"""Run ownership: one live process trains a run folder at a time, on one host or many.

A run is owned through a lease (filelock's ``SoftFileLease``): a marker file
``<runs-dir>/.leases/<run_id>.lock`` created with ``O_CREAT | O_EXCL`` and touched by a heartbeat
thread; create-exclusive works on NFS where ``flock`` does not, and the heartbeat tells a live
owner from one killed with SIGKILL. A dead owner on this host is taken over at once, one on another
host after its marker stayed unchanged for a whole lease (``FAIRBENCH_LEASE_SECONDS``, default
180 s). Every write checks the lease first (:func:`check_owned`), so a process frozen past its
lease stops with :class:`LeaseLost`. Why and how: docs/clusters.md, "Concurrent runs and leases".
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DEFAULT_LEASE_SECONDS = 180.0
LEASE_FOLDER = ".leases"


def lease_seconds() -> float:
    text = os.environ.get("FAIRBENCH_LEASE_SECONDS")
    if not text:
        return DEFAULT_LEASE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"FAIRBENCH_LEASE_SECONDS must be a positive number of seconds, got {text!r}")
    return value


def lease_file(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / LEASE_FOLDER / f"{run_dir.name}.lock"


@dataclass
class Owner:
    """Who holds a run's lease, read from its marker."""

    pid: int | None
    host: str | None
    heartbeat_age_s: float  # seconds since the marker was last touched (this host's clock)
    lease_s: float | None

    @property
    def dead(self) -> bool:
        """Certainly gone: same host and no such process. (Other hosts: see ``looks_stale``.)"""
        return self.host == socket.gethostname() and self.pid is not None and not pid_alive(self.pid)

    @property
    def looks_stale(self) -> bool:
        """Dead for sure, or no heartbeat for longer than the lease (by the file's time stamp)."""
        return self.dead or self.heartbeat_age_s > (self.lease_s or lease_seconds())

    def describe(self) -> str:
        who = f"pid {self.pid} on {self.host}" if self.pid is not None else "an unknown process"
        return f"{who} (heartbeat {self.heartbeat_age_s:.0f} s ago)"


def read_owner(run_dir: Path) -> Owner | None:
    """The lease's holder, or None when nobody holds it."""
    path = lease_file(run_dir)
    try:
        stat = path.stat()
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    try:
        pid = int(fields["pid"])
    except (KeyError, ValueError):
        pid = None
    try:
        duration = float(fields["duration"])
    except (KeyError, ValueError):
        duration = None
    return Owner(pid, fields.get("host"), max(0.0, time.time() - stat.st_mtime), duration)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_status(run_dir: Path, status: dict) -> dict:
    """A ``status.json`` that says running, checked against the run's lease: still running only
    while a live process holds it; else ``incomplete`` (and resumable), with the reason."""
    owner = read_owner(run_dir)
    recorded = f"process {status.get('pid')} on {status.get('host')}"
    if owner is None:
        return {**status, "state": "incomplete", "reason": f"{recorded} holds no lease on the run: it ended without "
                                                           "recording how"}
    if owner.looks_stale:
        return {**status, "state": "incomplete",
                "reason": f"no heartbeat from {owner.describe()} for longer than the lease "
                          f"({owner.lease_s or lease_seconds():.0f} s): presumed dead"}
    if (owner.pid, owner.host) == (os.getpid(), socket.gethostname()) and owner.pid != status.get("pid"):
        return {**status, "state": "incomplete", "reason": f"{recorded} stopped; this process has taken the run over"}
    return {**status, "pid": owner.pid, "host": owner.host, "heartbeat_age_s": round(owner.heartbeat_age_s, 1)}


class RunBusy(ValueError):
    """Another live process owns this run (a ValueError, like the runner's other refusals: exit 2)."""

    def __init__(self, run_dir: Path, owner: Owner | None):
        self.run_dir, self.owner = Path(run_dir), owner
        who = owner.describe() if owner else "another process"
        super().__init__(
            f"run {self.run_dir} is being trained by {who}; not starting a second copy. Wait for it to end; if "
            f"that process is gone, run again: a run whose heartbeat is older than {lease_seconds():.0f} s "
            f"(FAIRBENCH_LEASE_SECONDS) is taken over and resumed from its last checkpoint")


class LeaseLost(RuntimeError):
    """This process's lease on a run was taken over (it stalled for longer than the lease)."""


_HELD: dict[str, object] = {}  # resolved run folder -> the SoftFileLease this process holds on it


def _key(run_dir: Path) -> str:
    return os.path.realpath(run_dir)


def _warn_compromised(compromise) -> None:
    print(f"fairbench: lost the lease {compromise.lock_file} ({compromise.reason}): another process took this run "
          "over; this process stops at its next write to the run", file=sys.stderr, flush=True)


@contextlib.contextmanager
def hold(run_dir: Path, wait: float | None = None) -> Iterator[None]:
    """Own ``run_dir`` for the duration of the block, or raise :class:`RunBusy`.

    ``wait``: seconds to wait for a live owner (0: refuse at once). ``None`` (the default) refuses a
    live owner at once but waits long enough to take over one that looks dead: an owner on another
    host is declared dead only after this process has itself seen its heartbeat stop for a lease."""
    from filelock import SoftFileLease, Timeout

    key = _key(run_dir)
    if key in _HELD:  # already ours (a launcher holds it around the runner): nested holds are free
        yield
        return
    seconds = lease_seconds()
    marker = lease_file(run_dir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    lease = SoftFileLease(str(marker), lease_duration=seconds, thread_local=False, on_compromise=_warn_compromised)
    if wait is None:
        owner = read_owner(run_dir)
        wait = seconds + seconds / 3 + 1 if owner is not None and owner.looks_stale and not owner.dead else 0.0
        if wait:
            print(f"fairbench: {run_dir}: {owner.describe()} looks dead; watching its lease for up to {wait:.0f} s "
                  "before taking the run over", file=sys.stderr, flush=True)
    try:
        lease.acquire(timeout=wait, poll_interval=min(1.0, seconds / 10))
    except Timeout:
        raise RunBusy(run_dir, read_owner(run_dir)) from None
    _HELD[key] = lease
    try:
        yield
    finally:
        _HELD.pop(key, None)
        lease.release()


def check_owned(run_dir: Path) -> None:
    """Raise :class:`LeaseLost` when this process held ``run_dir``'s lease and no longer does.

    A no-op for folders this process holds no lease on (tools and tests that write run folders
    directly)."""
    lease = _HELD.get(_key(run_dir))
    if lease is None:
        return
    token = getattr(lease, "token", None)
    try:
        text = lease_file(run_dir).read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    if token is None or f"token={token}" not in text.splitlines():
        owner = read_owner(run_dir)
        raise LeaseLost(f"this process lost its lease on {run_dir}: "
                        f"{'now held by ' + owner.describe() if owner else 'the lease file is gone'} "
                        "(this process stalled for longer than the lease); nothing more is written to the run")
