"""Run folders: every file written atomically, so a crash never leaves a half-written record.

    runs/<run_id>/
      config.json        resolved configuration (the run id is its hash)
      environment.json   git revision, package versions, device, host, start / end time
      status.json        running | done | failed (+ error); running with a dead pid = incomplete
      history.json       per-epoch training losses and validation metrics
      metrics.json       selection (rule, epoch) and the val / test metric reports
      predictions_val.csv, predictions_test.csv   per-sample: index, id, target, groups, scores, pred
      checkpoint.pt      selected weights (load with weights_only=True)
      predictions_test-epoch<N>.csv   test predictions of an epoch another validation rule chose
                         (fairbench.rule_checkpoints; its checkpoint-epoch<N>.pt lives only while training)
      last.pt            latest epoch (weights, optimizers, RNG) for resuming
      evaluations/<dataset>-<split>/   cross-dataset evaluations (metrics.json, predictions.csv)
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
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fairbench.run_lease import check_owned  # a writer that lost its run's lease stops (LeaseLost)
from fairbench.run_lease import pid_alive as _pid_alive
from fairbench.run_lease import running_status

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


#: the code revision to record instead of asking git: for a copy of the code outside a git checkout
#: (a wheel, a container image: the commit it was built from), and for tests
REVISION_ENV = "FAIRBENCH_GIT_REVISION"


def selected_epoch(metrics: dict[str, Any]) -> int | None:
    """The epoch a run's checkpoint was selected at, counted from 1 as the log and the tables count
    (``metrics.json`` ``selection.selected_epoch``; records made before it stored ``epoch``, from 0)."""
    selection = metrics.get("selection") or {}
    if "selected_epoch" in selection:
        return selection["selected_epoch"]
    return None if selection.get("epoch") is None else selection["epoch"] + 1


def git_revision() -> str | None:
    """The commit of this code, ``+dirty`` when its working tree has uncommitted changes; None
    outside git."""
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(device: str) -> dict[str, Any]:
    import platform
    from importlib import metadata

    import torch

    versions = {}
    for dist in ("fairbench", "torch", "torchvision", "timm", "numpy", "pandas", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    env = {
        "git_revision": git_revision(),
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        # float reductions depend on the thread count: the same seed on 1 and 2 threads can end
        # in different models, so it is part of what reproduces a run
        "torch_threads": torch.get_num_threads(),
        # the GPUs this process was given (a launcher pins each worker to one)
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "started": now(),
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


@dataclass
class RunRecord:
    """Read-side view of a run folder."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    def status(self) -> dict[str, Any]:
        """Status, with a 'running' run whose process is gone reported as 'incomplete' (and one
        whose status.json cannot be read as incomplete with ``"unreadable": True``)."""
        try:
            status = read_json(self.path / "status.json")
        except FileNotFoundError:
            return {"state": "incomplete", "reason": "no status.json"}
        except (json.JSONDecodeError, OSError) as exc:
            return {"state": "incomplete", "reason": f"unreadable status.json: {exc}", "unreadable": True}
        if status.get("state") == "running":
            same_host = status.get("host") == socket.gethostname()
            if same_host and not _pid_alive(int(status.get("pid", -1))):
                epoch = status.get("epoch")  # 0-based in the record, 1-based in every message (as in the log)
                during = f"during epoch {epoch + 1}" if isinstance(epoch, int) else "before its first epoch"
                status = {**status, "state": "incomplete", "reason": f"process {status.get('pid')} died {during}"}
            else:  # other hosts: the run's lease and its heartbeat tell (fairbench.run_lease)
                status = running_status(self.path, status)
        return status

    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    def metrics(self) -> dict[str, Any]:
        try:
            return read_json(self.path / "metrics.json")
        except (OSError, ValueError) as exc:
            raise RunStoreError(f"{self.path / 'metrics.json'} is unreadable ({exc}); the run must be trained again: "
                                "run its command with --force") from None

    def environment(self) -> dict[str, Any]:
        return read_json(self.path / "environment.json")

    def predictions(self, split: str = "test") -> pd.DataFrame:
        return pd.read_csv(self.path / f"predictions_{split}.csv")

    def evaluations(self) -> list[Path]:
        folder = self.path / "evaluations"
        return sorted(p for p in folder.iterdir() if (p / "metrics.json").is_file()) if folder.is_dir() else []


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


def iter_runs(runs_dir: Path) -> list[RunRecord]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    # hidden folders are runs being trained aside (--force) or being replaced: not results yet
    return [RunRecord(p) for p in sorted(runs_dir.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()]


def clean_nan(obj: Any) -> Any:
    """NaN -> None, for strict JSON consumers (``--format json``)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nan(v) for v in obj]
    return obj
