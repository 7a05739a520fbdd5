"""Decode each image once into a memory-mapped cache: uint8 N x S x S x 3.

The cache is keyed by the source files (size, mtime), the resolution and the resize rule, written
to a temporary file and renamed, its JSON sidecar last, so a crash never leaves a cache that is
read as complete. Decoding runs in a thread pool. Bad images stop the build with a
:class:`DatasetError` naming file and row (``on_bad_image="error"``) or are skipped and listed
(``"skip"``); greyscale images wider than 8 bits are scaled, not clipped (:func:`to_8_bits`).
File layout, bad images and the cache folder: docs/real-datasets.md#the-image-cache-in-detail
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from fairbench.data.base import DatasetError

CACHE_VERSION = 2  # 2: 16-bit and 32-bit greyscale images scaled to 8 bits (1 clipped them)
#: the resize rule, part of the cache key: the paper's transforms.Resize((S, S)) on a PIL image
RESIZE_RULE = "RGB; JPEG draft (DCT downscale, >= S x S); PIL bilinear (antialiased) resize to S x S, aspect not kept"
#: greyscale modes wider than 8 bits: PIL's convert("RGB") clips them at 255 (a 16-bit scan turns white)
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
OnBadImage = Literal["error", "skip"]
Progress = Callable[[int, int], None]
CHUNK = 32


def default_cache_dir() -> Path:
    env = os.environ.get("FAIRBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fairbench"


@dataclass
class BadImage:
    index: int  # position in the requested file list
    file: str
    row: str  # where its labels come from, e.g. "fairface_label_train.csv line 7"
    reason: str


@dataclass
class DecodedImages:
    images: np.ndarray  # K x S x S x 3 uint8 (read-only memmap)
    kept: np.ndarray  # K positions in the requested file list
    bad: list[BadImage]
    path: Path  # the cache file
    built: bool  # decoded by this call (False: read from an existing cache)


def to_8_bits(pixels: np.ndarray, mode: str) -> np.ndarray:
    """A wide greyscale image (PIL mode ``I;16*``, ``I`` or ``F``) as uint8, scaled, not clipped.

    16-bit values are scaled by 255 / 65535. Mode ``I`` (32-bit) is what Pillow gives for many
    16-bit PNG / TIFF files, so values within 0..65535 are read as 16-bit too; wider ones are
    scaled from 0..2**31 - 1. Mode ``F`` (float) has no fixed range: 0..1 is scaled to 0..255, any
    other range is taken as 8-bit values. Negative values are clipped to 0."""
    values = pixels.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    elif mode.startswith("I;16") or (values.size == 0 or values.max() <= 65535):
        top = 65535.0
    else:
        top = 2.0**31 - 1
    scaled = np.nan_to_num(values, nan=0.0) * (255.0 / top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """One image as S x S x 3 uint8 (raises on unreadable files)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        if im.mode in WIDE_GREY_MODES:  # forces the full decode: truncated data raises here
            rgb = Image.fromarray(to_8_bits(np.asarray(im), im.mode)).convert("RGB")
        else:
            rgb = im.convert("RGB")  # forces the full decode: truncated data raises here
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


class StderrProgress:
    """Default progress: a line on stderr every few seconds for large decodes."""

    def __init__(self, label: str, every_s: float = 10.0, min_total: int = 2000):
        self.label, self.every_s, self.min_total = label, every_s, min_total
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if total < self.min_total:
            return
        now = time.monotonic()
        if done == total or now - self._last >= self.every_s:
            self._last = now
            print(f"decoding {self.label}: {done}/{total} images", file=sys.stderr, flush=True)


def _bad_error(bad: BadImage, policy_hint: bool = True) -> DatasetError:
    hint = (" Fix or re-download the file, or leave such images out with "
            "--set data.options.on_bad_image=skip (they are counted and listed in the run's dataset.json).")
    return DatasetError(f"cannot read image {bad.file} ({bad.row}): {bad.reason}.{hint if policy_hint else ''}")


def _examine(path: Path) -> tuple[int, int] | str:
    """(size, mtime) of a non-empty regular file, else why it cannot be an image (no decoding)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"it is a symbolic link to {os.readlink(path)}, which does not exist"
        return "file is missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "it is a symbolic link that leads back to itself (a loop), not an image file"
        return f"it cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "it is a folder, not an image file"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file (a device, pipe or socket), not an image file"
    if st.st_size == 0:
        return "the file is empty (0 bytes)"
    return st.st_size, st.st_mtime_ns


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be an image, from the file system alone; None if it may be one."""
    found = _examine(Path(path))
    return found if isinstance(found, str) else None


def bad_image_error(file: str | Path, row: str, reason: str) -> DatasetError:
    """The error of an unreadable image at ``file`` (labels at ``row``) with ``on_bad_image="error"``."""
    return _bad_error(BadImage(-1, str(file), row, reason))


def discard(decoded: DecodedImages) -> None:
    """Remove a cache this process has just built (its data and sidecar): a build of several splits
    that fails on a later one leaves the cache folder as it found it."""
    for path in (decoded.path, decoded.path.with_suffix(".json")):
        path.unlink(missing_ok=True)


def _cache_key(entries: list[tuple[str, int | None, int | None]], size: int) -> str:
    blob = json.dumps({"version": CACHE_VERSION, "size": size, "resize": RESIZE_RULE, "files": entries})
    return hashlib.sha256(blob.encode()).hexdigest()


def _open_cache(data: Path, count: int, size: int) -> np.ndarray:
    if count == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.memmap(data, dtype=np.uint8, mode="r", shape=(count, size, size, 3))


def _read_existing(data: Path, meta: Path, key: str, size: int) -> tuple[np.ndarray, np.ndarray, list[BadImage]] | None:
    try:
        info = json.loads(meta.read_text())
        count = int(info["count"])
        if info.get("key") != key or info.get("size") != size or data.stat().st_size != count * size * size * 3:
            return None
        kept = np.asarray(info["kept"], dtype=np.int64)
        bad = [BadImage(**b) for b in info.get("bad", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(kept) != count:
        return None
    return _open_cache(data, count, size), kept, bad


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_")


def _remove_stale_temporaries(cache_dir: Path, stem: str) -> None:
    """Temporary files of builds killed on this host (their process is gone)."""
    host = _host()
    for tmp in cache_dir.glob(f".{stem}.*.tmp"):
        try:
            tmp_host, pid, _token = tmp.name[len(stem) + 2:-len(".tmp")].rsplit("-", 2)
            pid = int(pid)
        except ValueError:
            continue
        if tmp_host != host:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


def _examine_all(paths: list[Path], rows: list[str], on_bad_image: OnBadImage,
                 ) -> tuple[list[tuple[str, int | None, int | None]], list[BadImage]]:
    """Each file's (absolute path, size, mtime) cache-key entry, and the files unusable before decoding."""
    entries: list[tuple[str, int | None, int | None]] = []
    bad: list[BadImage] = []
    for i, path in enumerate(paths):
        found = _examine(path)
        if isinstance(found, str):  # missing, a folder, a link loop, empty: found before anything is written
            unusable = BadImage(i, str(path), rows[i], found)
            if on_bad_image == "error":
                raise _bad_error(unusable)
            bad.append(unusable)
            entries.append((str(path.absolute()), None, None))
        else:
            entries.append((str(path.absolute()), *found))
    return entries, bad


def _make_cache_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the image cache folder {folder} ({exc}); choose another with "
                           "$FAIRBENCH_CACHE or --set data.cache_dir=/path") from None


def decode_images(
    files: Sequence[str | Path],
    size: int,
    *,
    name: str,
    cache_dir: Path | str | None = None,
    rows: Sequence[str] | None = None,
    on_bad_image: OnBadImage = "error",
    progress: Progress | None = None,
    workers: int | None = None,
) -> DecodedImages:
    """Decoded images of ``files`` at ``size`` x ``size``, from the cache or decoded into it.

    ``name`` (e.g. ``"fairface-train"``) prefixes the cache file; ``rows[i]`` says where the
    labels of ``files[i]`` come from, for error messages."""
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    if size <= 0:
        raise DatasetError(f"image size must be positive, got {size}")
    paths = [Path(f) for f in files]
    rows = list(rows) if rows is not None else [f"item {i}" for i in range(len(paths))]
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    entries, bad = _examine_all(paths, rows, on_bad_image)
    _make_cache_folder(folder)
    key = _cache_key(entries, size)
    stem = f"{name}-{size}px-{key[:16]}"
    data, meta = folder / f"{stem}.u8", folder / f"{stem}.json"

    existing = _read_existing(data, meta, key, size)
    if existing is not None:
        images, kept, cached_bad = existing
        if cached_bad and on_bad_image == "error":
            raise _bad_error(cached_bad[0])
        return DecodedImages(images, kept, cached_bad, data, built=False)

    _remove_stale_temporaries(folder, stem)
    present = [i for i, e in enumerate(entries) if e[1] is not None]
    tmp = folder / f".{stem}.{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    row_bytes = size * size * 3
    report = progress or StderrProgress(name)
    try:
        failures = _decode_into(tmp, paths, present, size, rows, on_bad_image, report, workers)
        bad.extend(failures)
        bad.sort(key=lambda b: b.index)
        bad_idx = {b.index for b in bad}
        kept = np.asarray([i for i in range(len(paths)) if i not in bad_idx], dtype=np.int64)
        if tmp.exists():
            _compact(tmp, len(paths), bad_idx, row_bytes)
            with open(tmp, "r+b") as fh:
                fh.truncate(len(kept) * row_bytes)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            tmp.touch()
        os.replace(tmp, data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    from fairbench.runs.store import atomic_write_json

    atomic_write_json(meta, {
        "key": key, "version": CACHE_VERSION, "name": name, "size": size, "count": int(len(kept)),
        "resize": RESIZE_RULE, "sources": len(paths), "kept": kept.tolist(),
        "bad": [asdict(b) for b in bad], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pillow": _pillow_version(),
    })
    return DecodedImages(_open_cache(data, len(kept), size), kept, bad, data, built=True)


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


def _why_unreadable(path: Path, exc: Exception) -> str:
    try:
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):  # its message repeats the path
        return "not an image in a format Pillow can read (UnidentifiedImageError)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _decode_into(tmp: Path, paths: list[Path], present: list[int], size: int, rows: list[str],
                 on_bad_image: str, progress: Progress, workers: int | None) -> list[BadImage]:
    """Decode ``present`` files into slot i of a memmap at ``tmp`` (N = len(paths) slots)."""
    if not paths:
        return []
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(paths), size, size, 3))
    stop = threading.Event()

    def work(chunk: list[int]) -> list[BadImage]:
        failed = []
        for i in chunk:
            if stop.is_set():
                break
            try:
                out[i] = decode_image(paths[i], size)
            except Exception as exc:  # any unreadable file: recorded, or an error naming it
                reason = _why_unreadable(paths[i], exc)
                failed.append(BadImage(i, str(paths[i]), rows[i], reason))
                if on_bad_image == "error":
                    stop.set()
                    break
        return failed

    chunks = [present[i:i + CHUNK] for i in range(0, len(present), CHUNK)]
    n_workers = workers or min(8, os.cpu_count() or 1)
    failures: list[BadImage] = []
    done = 0
    total = len(present)
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="decode") as pool:
        pending = {pool.submit(work, chunk): len(chunk) for chunk in chunks}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done += pending.pop(fut)
                    failures.extend(fut.result())
                if failures and on_bad_image == "error":
                    stop.set()
                    for fut in pending:
                        fut.cancel()
                    break
                progress(done, total)
        except BaseException:
            stop.set()
            for fut in pending:
                fut.cancel()
            raise
    if failures and on_bad_image == "error":
        del out
        raise _bad_error(min(failures, key=lambda b: b.index))
    out.flush()
    del out
    return failures


def _compact(tmp: Path, n: int, bad_idx: set[int], row_bytes: int) -> None:
    """Move the kept rows down over the bad ones, in order (rows only move to lower offsets)."""
    if not bad_idx:
        return
    with open(tmp, "r+b") as fh:
        write = 0
        for slot in range(n):
            if slot in bad_idx:
                continue
            if slot != write:
                fh.seek(slot * row_bytes)
                row = fh.read(row_bytes)
                fh.seek(write * row_bytes)
                fh.write(row)
            write += 1
