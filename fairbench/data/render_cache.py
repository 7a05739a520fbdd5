"""Rendered synthface splits kept on disk, so the jobs of a suite render each dataset once.

A split's pixels are a pure function of its latents and the renderer, so they are cached under a
key made of both (the latents' bytes and a few probe images rendered now). Files are written
atomically and checked on read (key, shape, checksum); any difference renders afresh, and a
folder that cannot be written only costs the rendering. ``FAIRBENCH_RENDER_CACHE=0`` turns it
off. File layout: docs/builtin-benchmark.md#the-rendered-split-cache
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

PROBES = 4  # images rendered to key the renderer itself (as the fingerprint's probes)
CACHE_ENV = "FAIRBENCH_RENDER_CACHE"


def enabled() -> bool:
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_key(lat: dict[str, np.ndarray], image_size: int, render: Callable[..., np.ndarray]) -> str:
    digest = hashlib.sha256(f"{image_size}".encode())
    for name in sorted(lat):
        digest.update(name.encode() + np.ascontiguousarray(lat[name]).tobytes())
    digest.update(render(lat, image_size, 0, min(PROBES, len(lat[next(iter(lat))]))).tobytes())
    return digest.hexdigest()[:24]


def _checksum(pixels: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(pixels)).cast("B"), digest_size=16).hexdigest()


def _write_atomically(path: Path, write: Callable[[object], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(data: Path, meta: Path, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        sidecar = json.loads(meta.read_text())
        if sidecar.get("key") != key or tuple(sidecar.get("shape", ())) != shape:
            return None
        pixels = np.load(data, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if pixels.dtype != np.uint8 or pixels.shape != shape or _checksum(pixels) != sidecar.get("blake2b"):
        return None
    return pixels


def rendered(name: str, split: str, lat: dict[str, np.ndarray], image_size: int, cache_dir: Path | None,
             render_all: Callable[[dict[str, np.ndarray], int], np.ndarray],
             render: Callable[..., np.ndarray]) -> np.ndarray:
    """``render_all(lat, image_size)``, read from the cache when it holds exactly these pixels."""
    if not enabled() or len(lat[next(iter(lat))]) == 0:
        return render_all(lat, image_size)
    from fairbench.data.image_cache import default_cache_dir

    folder = Path(cache_dir or default_cache_dir()) / "rendered"
    key = cache_key(lat, image_size, render)
    stem = f"{name}-{split}-{image_size}px-{key}"
    data, meta = folder / f"{stem}.npy", folder / f"{stem}.json"
    shape = (len(lat[next(iter(lat))]), image_size, image_size, 3)
    pixels = _read(data, meta, key, shape)
    if pixels is not None:
        return pixels
    pixels = render_all(lat, image_size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(data, lambda fh: np.save(fh, pixels, allow_pickle=False))
        sidecar = {"key": key, "shape": list(shape), "blake2b": _checksum(pixels), "dataset": name, "split": split}
        _write_atomically(meta, lambda fh: fh.write(json.dumps(sidecar).encode()))
    except OSError:  # a full or read-only cache folder: this run rendered, the next renders too
        pass
    return pixels
