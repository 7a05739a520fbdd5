"""The dataset contract: every loader returns decoded uint8 images and labels per split.

Images are decoded once (into memory or a memory-mapped cache) and augmented per batch by
the runner, so a dataset never deals with tensors, devices or transforms.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

SPLITS = ("train", "val", "test")
GROUP_SEPARATOR = "|"


class DatasetError(ValueError):
    """Bad or missing data: the message names the file / row and says what to do."""


class DataNotice(UserWarning):
    """Something in the data the user should know that is not an error (files skipped, values
    normalised): issued with ``warnings.warn``, shown by the CLI as one ``warning:`` line."""


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Task:
    target: str
    protected: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.target}~{'+'.join(self.protected)}"


@dataclass
class DataSplit:
    """One split: ``images[i]`` (H x W x 3 uint8) has label ``targets[i]`` and demographics ``attributes.iloc[i]``."""

    name: str
    images: np.ndarray  # N x H x W x 3 uint8, possibly an np.memmap
    targets: np.ndarray  # N int64 class indices into DatasetBundle.classes
    attributes: pd.DataFrame  # protected (and auxiliary) label columns as strings, N rows
    sample_ids: np.ndarray  # N stable identifiers (relative file names, or synthetic ids)

    def __post_init__(self) -> None:
        n = len(self.targets)
        if len(self.images) != n or len(self.attributes) != n or len(self.sample_ids) != n:
            raise DatasetError(
                f"split {self.name!r}: images ({len(self.images)}), targets ({n}), attributes "
                f"({len(self.attributes)}) and ids ({len(self.sample_ids)}) differ in length"
            )
        self.attributes = self.attributes.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.targets)

    def group_labels(self, protected: tuple[str, ...]) -> np.ndarray:
        """Intersectional group label per sample, e.g. ``"White|Male"``."""
        missing = [c for c in protected if c not in self.attributes.columns]
        if missing:
            raise DatasetError(
                f"split {self.name!r} has no protected column(s) {missing}; "
                f"available: {list(self.attributes.columns)}"
            )
        cols = [self.attributes[c].astype(str) for c in protected]
        joined = cols[0]
        for col in cols[1:]:
            joined = joined + GROUP_SEPARATOR + col
        return joined.to_numpy(dtype=object)

    def subset(self, indices: np.ndarray) -> "DataSplit":
        return DataSplit(
            self.name,
            self.images[indices],
            self.targets[indices],
            self.attributes.iloc[indices].reset_index(drop=True),
            self.sample_ids[indices],
        )


@dataclass
class DatasetBundle:
    """What a loader returns: splits plus the vocabulary needed to read them."""

    name: str
    task: Task
    classes: list[str]  # target class names, index = class id
    splits: dict[str, DataSplit]
    info: dict[str, Any] = field(default_factory=dict)  # protocol, skipped files ... (recorded in the run)
    #: display order of each protected attribute's values (e.g. skin tones light to dark); others sort last
    value_order: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = set()
        for split in self.splits.values():
            labels.update(split.group_labels(self.task.protected))
        self.group_names: list[str] = sorted(labels, key=self._group_sort_key)
        self._group_index = {g: i for i, g in enumerate(self.group_names)}

    def _group_sort_key(self, group: str) -> tuple:
        key = []
        for col, value in zip(self.task.protected, group.split(GROUP_SEPARATOR)):
            order = self.value_order.get(col, [])
            key.append((order.index(value) if value in order else len(order), value))
        return tuple(key)

    def group_codes(self, split: str) -> np.ndarray:
        labels = self.splits[split].group_labels(self.task.protected)
        return np.fromiter((self._group_index[g] for g in labels), dtype=np.int64, count=len(labels))

    def attribute_codes(self, split: str) -> dict[str, np.ndarray]:
        """Per protected attribute integer codes (vocabulary: sorted values over all splits)."""
        out = {}
        for col in self.task.protected:
            vocab = sorted({str(v) for s in self.splits.values() for v in s.attributes[col]})
            index = {v: i for i, v in enumerate(vocab)}
            out[col] = np.array([index[str(v)] for v in self.splits[split].attributes[col]], dtype=np.int64)
        return out


class Dataset:
    """Base class of a registered dataset. Subclasses set the class attributes and ``load``."""

    summary: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    default_target: ClassVar[str]
    default_protected: ClassVar[tuple[str, ...]]
    #: training recipe family: "cpu-small" (built-in benchmark) or "paper" (real face datasets)
    profile: ClassVar[str] = "paper"
    default_image_size: ClassVar[int] = 224
    #: False for a dataset that reads no files (the built-in generated benchmarks); a loader that
    #: needs files finds them from ``root`` or its environment variable (data/sources.py)
    needs_root: ClassVar[bool] = True
    #: shared concepts this dataset's targets stand for, ``{concept: target column}`` (e.g. CelebA
    #: ``{"gender": "Male"}``): cross-dataset evaluation maps a run's target through them
    target_concepts: ClassVar[dict[str, str]] = {}
    #: the Options field a generated dataset draws its images from, or None (data read from files):
    #: left unset, the run's ``train.seed`` fills it (fairbench.config.resolve), so every seed is a
    #: new draw of the data as well as of the initialisation; set, it holds the data fixed
    data_seed_option: ClassVar[str | None] = None

    def __init__(self, root: Path | None, options: BaseModel | None = None, cache_dir: Path | None = None):
        self.root = root
        self.options = options if options is not None else self.Options()
        self.cache_dir = cache_dir

    def targets(self) -> list[str]:
        """Target columns this dataset can train on."""
        return [self.default_target]

    def load(self, task: Task, image_size: int, splits: Sequence[str] = SPLITS) -> DatasetBundle:
        """Decode ``splits`` (cross-dataset evaluation asks only for the one it scores)."""
        raise NotImplementedError

    def fingerprint(self, task: Task) -> dict[str, Any]:
        """What the data is, not where it is: ``{"digest": hex, ...}``, part of the run id.

        Computed before anything is decoded, so a run on other data never shares an id (and a
        finished result) with this one, while a moved copy does. Loaders that assemble through
        :func:`fairbench.data.image_table.build_bundle` get it from their label table (rows,
        splits, image sizes) without decoding; any other loader is loaded once at a small size
        and its decoded content hashed (override this to do better)."""
        with fingerprint_only() as box:
            bundle = self.load(task, 32)
        if box:
            return box
        digest = hashlib.sha256(json.dumps(bundle.classes).encode())
        for name in sorted(bundle.splits):
            split = bundle.splits[name]
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(split.images).tobytes())
            digest.update(split.targets.astype(np.int64).tobytes())
            digest.update(split.attributes.to_csv(index=False).encode())
            digest.update("\n".join(map(str, split.sample_ids)).encode())
        return {"digest": digest.hexdigest()[:16], "split_sizes": {k: len(v) for k, v in sorted(bundle.splits.items())},
                "how": "decoded content at 32 px"}


#: set by :func:`fingerprint_only`: image_table.build_bundle then fingerprints its table instead of decoding
_FINGERPRINT_ONLY: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("fingerprint_only", default=None)


@contextlib.contextmanager
def fingerprint_only() -> Iterator[dict[str, Any]]:
    """Inside this block a loader's ``load`` checks its label files as usual, but
    :func:`fairbench.data.image_table.build_bundle` decodes nothing: it fills the yielded dict
    with its table's fingerprint and returns a bundle without splits. The labels' errors come out;
    the images' do not."""
    box: dict[str, Any] = {}
    token = _FINGERPRINT_ONLY.set(box)
    try:
        yield box
    finally:
        _FINGERPRINT_ONLY.reset(token)


def fingerprint_box() -> dict[str, Any] | None:
    """The dict to fill inside :func:`fingerprint_only`; None outside it (decode as usual)."""
    return _FINGERPRINT_ONLY.get()
