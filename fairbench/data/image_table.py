"""From a table of labelled image files to a :class:`DatasetBundle`: the one assembly path of
every file-based loader (FairFace, UTKFace, CelebA, LFWA+, generic manifests).

A loader parses its label files into a table (one row per image: ``path``, ``split``, ``source``,
label columns); :func:`build_bundle` checks it (each image listed once, the task's columns, what
each split holds: :mod:`fairbench.data.coverage`) before any image is decoded, then maps the
target to class indices and decodes each split through :mod:`fairbench.data.image_cache`.
The table's columns and the checks: docs/real-datasets.md#from-a-label-table-to-a-dataset-and-what-the-splits-must-hold
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fairbench.data.base import (GROUP_SEPARATOR, SPLITS, DataSplit, DatasetBundle, DatasetError, Task,
                                     fingerprint_box)
from fairbench.data.coverage import check_coverage
from fairbench.data.image_cache import (DecodedImages, OnBadImage, Progress, bad_image_error, decode_images, discard,
                                   file_problem)


def _blank(values: pd.Series) -> np.ndarray:
    return (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()


def check_columns(name: str, table: pd.DataFrame, task: Task, where: str, targets: Sequence[str]) -> None:
    """Target and protected columns exist and have a value in every row."""
    if task.target not in table.columns:
        raise DatasetError(f"{name}: no target {task.target!r} in {where}; targets: {', '.join(targets)}")
    columns = [c for c in table.columns if c not in ("path", "split", "source")]
    missing = [c for c in task.protected if c not in table.columns]
    if missing or not task.protected:
        raise DatasetError(f"{name}: protected attribute(s) {missing or '(none)'} not in {where}; "
                           f"columns: {', '.join(columns)}")
    for col in dict.fromkeys((task.target, *task.protected)):
        blank = _blank(table[col])
        if blank.any():
            i = int(np.flatnonzero(blank)[0])
            raise DatasetError(f"{name}: empty {col!r} value for {table['path'].iloc[i]} ({table['source'].iloc[i]}); "
                               f"{int(blank.sum())} row(s) have none. Every row needs a value in the task's columns.")


def in_two_splits(where: str, path: str, first: tuple[str, str], second: tuple[str, str]) -> DatasetError:
    """The error of an image listed in two splits; ``first`` / ``second`` are (split, label row)."""
    return DatasetError(f"{where}: {path} is in the {first[0]!r} split ({first[1]}) and in the {second[0]!r} split "
                        f"({second[1]}): it would be trained on and then scored as a held-out image; list it in one "
                        "split only")


def check_each_path_once(where: str, table: pd.DataFrame, splits: pd.Series | None = None) -> None:
    """No path in two rows of ``table`` (columns ``path``, ``source``); ``splits`` (default: the
    ``split`` column, if any) names the rows' splits, so a path in two splits is told apart from
    one listed twice in the same split."""
    twice = table["path"].duplicated(keep="first").to_numpy()
    if not twice.any():
        return
    if splits is None and "split" in table.columns:
        splits = table["split"]
    i = int(np.flatnonzero(twice)[0])
    path = table["path"].iloc[i]
    j = int(np.flatnonzero((table["path"] == path).to_numpy())[0])
    if splits is not None and str(splits.iloc[i]) != str(splits.iloc[j]):
        raise in_two_splits(where, path, (str(splits.iloc[j]), table["source"].iloc[j]),
                            (str(splits.iloc[i]), table["source"].iloc[i]))
    raise DatasetError(f"{where} ({table['source'].iloc[i]}): {path} is listed twice (also {table['source'].iloc[j]}); "
                       "list every image once")


def _group_labels(table: pd.DataFrame, protected: Sequence[str]) -> pd.Series:
    labels = table[protected[0]].astype(str)
    for col in protected[1:]:
        labels = labels + GROUP_SEPARATOR + table[col].astype(str)
    return labels


def check_files(table: pd.DataFrame, image_root: Path) -> None:
    """Every image file exists and is a non-empty file (a stat each), in all splits, before the
    first split is decoded: a missing test image must not cost the decoding of the training split."""
    for rel, source in zip(table["path"], table["source"]):
        problem = file_problem(image_root / rel)
        if problem is not None:
            raise bad_image_error(image_root / rel, source, problem)


def check_links(name: str, table: pd.DataFrame, image_root: Path) -> None:
    """An image that is a symbolic link to a file outside the data root is refused, like a
    ``../`` path: the run would read (and fingerprint) something that is not part of the
    dataset. Linked folders (a split kept on another disk) are fine."""
    base = os.path.realpath(image_root)
    for rel, source in zip(table["path"], table["source"]):
        file = os.path.join(image_root, rel)
        if os.path.islink(file):
            target = os.path.realpath(file)
            if os.path.commonpath([target, base]) != base:
                raise DatasetError(f"{name}: {rel} ({source}) is a symbolic link to {target}, outside the data root "
                                   f"{image_root}; copy the file into the root (linked folders are fine)")


def table_fingerprint(table: pd.DataFrame, image_root: Path, classes: Sequence[str]) -> dict[str, Any]:
    """Content, not location: every row's split, relative path, labels and file size (a stat per
    image, no decoding). A moved copy has the same fingerprint; an edited label, an added,
    removed or re-encoded image or another split does not. (An image replaced by one of exactly
    the same byte size goes unnoticed: the price of not reading every file.)"""
    columns = sorted(c for c in table.columns if c != "source")
    rows = table[columns].astype(str).sort_values(["split", "path"], kind="stable")
    digest = hashlib.sha256(("\t".join(columns) + "\n" + "\t".join(classes) + "\n").encode())
    total, missing, path_at = 0, 0, columns.index("path")
    for values in rows.itertuples(index=False):
        try:
            size = os.stat(image_root / values[path_at]).st_size
        except OSError:  # reported by the decoder, which names the row
            size, missing = -1, missing + 1
        total += max(size, 0)
        digest.update(("\t".join(values) + f"\t{size}\n").encode())
    return {"digest": digest.hexdigest()[:16], "images": len(rows), "bytes": total, "missing_files": missing,
            "split_sizes": {k: int(v) for k, v in rows["split"].value_counts().sort_index().items()}}


def build_bundle(
    name: str,
    table: pd.DataFrame,
    image_root: Path,
    task: Task,
    image_size: int,
    *,
    classes: list[str] | None = None,
    cache_dir: Path | None = None,
    on_bad_image: OnBadImage = "error",
    info: dict[str, Any] | None = None,
    value_order: dict[str, list[str]] | None = None,
    targets: Sequence[str] = (),
    splits: Sequence[str] = SPLITS,
    progress: Progress | None = None,
) -> DatasetBundle:
    """Decode and assemble the requested ``splits`` of ``table`` (see the module docstring)."""
    info = dict(info or {})
    check_each_path_once(name, table)
    check_columns(name, table, task, "the label table", targets or [task.target])
    target_values = table[task.target].astype(str)
    if classes is None:
        classes = sorted(target_values.unique())
    unknown = ~target_values.isin(classes).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DatasetError(f"{name}: unknown {task.target!r} value {target_values.iloc[i]!r} for "
                           f"{table['path'].iloc[i]} ({table['source'].iloc[i]}); expected one of {classes}")
    for split in splits:
        if not (table["split"] == split).any():
            raise DatasetError(f"{name}: the {split!r} split is empty (no rows of the label files fall into it); "
                               "check the files and the dataset options")
    requested = table[table["split"].isin(list(splits))]
    by_split = {s: requested[requested["split"] == s] for s in splits}
    check_coverage(name, task.target, classes, {s: rows[task.target].astype(str) for s, rows in by_split.items()},
                   {s: _group_labels(rows, task.protected) for s, rows in by_split.items()})
    check_links(name, requested, image_root)
    box = fingerprint_box()
    if box is not None:
        box.update(table_fingerprint(requested, image_root, classes))
        return DatasetBundle(name, task, list(classes), {}, info, value_order=dict(value_order or {}))
    if on_bad_image == "error":
        check_files(requested, image_root)
    class_index = {c: i for i, c in enumerate(classes)}
    out: dict[str, DataSplit] = {}
    skipped: dict[str, Any] = {}
    caches: dict[str, str] = {}
    built: list[DecodedImages] = []
    try:
        for split in splits:
            rows = by_split[split]
            files = [image_root / p for p in rows["path"]]
            decoded = decode_images(files, image_size, name=f"{name}-{split}", cache_dir=cache_dir,
                                    rows=rows["source"].tolist(), on_bad_image=on_bad_image, progress=progress)
            if decoded.built:
                built.append(decoded)
            kept = rows.iloc[decoded.kept]
            if decoded.bad:
                skipped[split] = {"count": len(decoded.bad),
                                  "files": [{"file": b.file, "row": b.row, "reason": b.reason} for b in decoded.bad]}
            if kept.empty:
                raise DatasetError(f"{name}: every image of the {split!r} split was skipped as unreadable "
                                   f"(first: {decoded.bad[0].file}: {decoded.bad[0].reason})")
            caches[split] = str(decoded.path)
            attrs = pd.DataFrame({c: kept[c].astype(str).to_numpy() for c in task.protected})
            targets_idx = np.array(kept[task.target].astype(str).map(class_index), dtype=np.int64)  # a writable copy
            out[split] = DataSplit(split, decoded.images, targets_idx, attrs, np.array(kept["path"], dtype=object))
    except DatasetError:  # a bad image in a later split: the caches of the earlier ones go too (nothing written)
        for decoded in built:
            discard(decoded)
        raise
    info["skipped_images"] = {k: v["count"] for k, v in skipped.items()}
    if skipped:
        info["skipped_image_files"] = skipped
    info["image_cache"] = caches
    info["image_size"] = image_size
    return DatasetBundle(name, task, list(classes), out, info, value_order=dict(value_order or {}))
