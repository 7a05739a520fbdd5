"""Writing and reading a run folder's files: each written atomically (whole or not at all), so a
crash never leaves a half-written record, and every write first checks that this process still
holds the run's lease (:mod:`fairbench.runs.lease`). The folder's files are listed in
``docs/results-files.md``; :class:`fairbench.runs.record.RunRecord` reads them back.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import io
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from fairbench.runs.lease import check_owned  # a writer that lost its run's lease stops (LeaseLost)

DEFAULT_RUNS_DIR = Path("runs")
STATES = ("running", "done", "failed", "incomplete")
#: errors of the folder, not of the program: full, read-only, not ours
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class RunStoreError(ValueError):
    """A runs folder that cannot be written (full, read-only, no permission) or a record that cannot be read."""


WRITABLE_RUNS_DIR = "choose a writable --runs-dir"


def storage_error(path: Path, exc: OSError, unwritable_hint: str = WRITABLE_RUNS_DIR) -> RunStoreError:
    """``unwritable_hint``: what to do about a read-only or forbidden folder (commands without
    ``--runs-dir``, such as ``eval``, say their own)."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only"}.get(exc.errno, "no permission to write there")
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else unwritable_hint
    return RunStoreError(f"cannot write {path}: {what} ({exc.strerror}); {hint}")


@contextlib.contextmanager
def storage_errors(path: Path, name_the_file: bool = False, unwritable_hint: str = WRITABLE_RUNS_DIR):
    """A full, read-only or forbidden folder met in the block: one :class:`RunStoreError` naming
    ``path`` (with ``name_the_file``, the file the error names, if it names one)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(Path(exc.filename) if name_the_file and exc.filename else path, exc,
                                unwritable_hint) from None
        raise


def check_writable(folder: Path, unwritable_hint: str = WRITABLE_RUNS_DIR) -> None:
    """A clear error now, rather than a traceback after the data has loaded: the folder can be
    created, written to and has room for at least a page (a full disk still creates empty files)."""
    folder = Path(folder)
    probe = None
    try:
        with storage_errors(folder, unwritable_hint=unwritable_hint):
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
    except FileExistsError:
        raise RunStoreError(f"runs folder {folder} exists and is not a folder; choose another --runs-dir") from None
    except NotADirectoryError:
        raise RunStoreError(f"runs folder {folder} is inside a file, not a folder; choose another --runs-dir") from None
    finally:
        if probe is not None:
            Path(probe).unlink(missing_ok=True)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(obj: Any):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all; a full or read-only disk is a :class:`RunStoreError`."""
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                # mkstemp makes the file owner-only; results are shared (a lab's runs folder), so
                # they get the permissions an ordinary open() would give
                os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_json(path: Path, obj: Any) -> None:
    # NaN is written as NaN (Python's json reads it back); undefined rates must stay NaN.
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=True).encode())


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    atomic_write_bytes(path, buf.getvalue().encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class RunWriter:
    """Write-side of a run folder for the runner. ``lease_of``: the run folder whose lease covers
    this one (a ``--force`` run trained aside, in a hidden folder, is owned through its run's)."""

    def __init__(self, path: Path, lease_of: Path | None = None):
        self.path = Path(path)
        self.lease_of = Path(lease_of) if lease_of is not None else self.path
        with storage_errors(self.path):
            self.path.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, obj: Any) -> None:
        check_owned(self.lease_of)
        atomic_write_json(self.path / name, obj)

    def set_status(self, state: str, **extra: Any) -> None:
        assert state in STATES
        payload = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "updated": now(), **extra}
        self.write_json("status.json", payload)

    def write_predictions(self, split: str, frame: pd.DataFrame, folder: Path | None = None) -> None:
        check_owned(self.lease_of)
        atomic_write_csv((folder or self.path) / f"predictions_{split}.csv", frame)

    def save_checkpoint(self, name: str, obj: Any) -> None:
        check_owned(self.lease_of)
        atomic_torch_save(self.path / name, obj)


def clean_nan(obj: Any) -> Any:
    """NaN -> None, for strict JSON consumers (``--format json``)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nan(v) for v in obj]
    return obj
