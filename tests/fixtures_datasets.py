"""The kit of the datasets' miniature copies: face-like JPEGs, damaged files, and the fixture
record the registry contract test reads.

Each dataset's miniature copy, in its exact official layout (docs/specs-notes.md, "Datasets"),
is written by ``write_fixture(root)`` in its own test module, ``tests/test_datasets_NAME.py``:
``tests/test_registry_contracts.py`` finds it there by the dataset's registered name. The images
are small synthetic faces (SynthFace renderings) saved as JPEGs at each dataset's native size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fairbench.data.base import Task


@dataclass
class DatasetFixture:
    """What ``write_fixture(root)`` returns: the options and task to load the copy with (None:
    the dataset's default target and protected attributes)."""

    options: dict[str, Any] = field(default_factory=dict)
    task: Task | None = None


# -- images -------------------------------------------------------------------------------------------


def face_images(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` face-like RGB images of ``size`` = (width, height)."""
    try:
        from fairbench.data.synthface import SynthFaceOptions, render_all, sample_split

        lat = sample_split("train", max(n, 1), "smiling", SynthFaceOptions(seed=seed))
        small = render_all(lat, 64)[:n]
    except ImportError:  # the synthetic renderer is optional for these fixtures
        small = np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    return [np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in small]


def write_jpegs(paths: list[Path], size: tuple[int, int], seed: int = 0) -> None:
    for path, pixels in zip(paths, face_images(len(paths), size, seed)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, "JPEG", quality=90)


def truncate_file(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt_file(path: Path) -> None:
    path.write_bytes(b"this is not an image" * 20)
