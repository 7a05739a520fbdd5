"""A generic manifest: any labelled face images a user brings.

A CSV or Parquet file with a ``path`` column (relative to the data root, never outside it), an
optional ``split`` column, an optional ``identity`` column and any label columns; the run names
its target and protected columns. Missing splits are drawn with fixed seeds, stratified by the
protected groups (whole identities when there is an ``identity`` column).
Columns, data root and split rules: docs/real-datasets.md#a-generic-manifest
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fairbench.data import splitting
from fairbench.data.base import SPLITS, Dataset, DatasetBundle, DatasetError, Task
from fairbench.data.image_table import build_bundle, check_columns, check_each_path_once
from fairbench.data.label_text import label_lines, read_label_text
from fairbench.data.sources import Source, data_root, safe_relative
from fairbench.registry import register_dataset

RESERVED = ("path", "split", "identity")
DEFAULT_NAMES = ("manifest.csv", "manifest.parquet")
SOURCE = Source(
    "manifest", "FAIRBENCH_MANIFEST_ROOT", required=[("manifest.csv",), ("manifest.parquet",)],
    get_from="your own data: a CSV / Parquet file with a path column, optional split and identity columns, "
             "and label columns (see fairbench.data.manifest)",
)


class ManifestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest: str | None = Field(None, description="manifest file, relative to the root or absolute")
    images_root: str | None = Field(None, description="folder the paths are relative to (default: the root)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="val share when the manifest has no val rows")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="test share when the manifest has no split column")
    split_seed: int = Field(0, ge=0, description="seed of drawn splits")
    on_bad_image: Literal["error", "skip"] = Field("error", description="unreadable image: error, or skip and count")

    @model_validator(mode="after")
    def _fractions(self) -> "ManifestOptions":
        splitting.check_split_fractions(self.val_fraction, self.test_fraction)
        return self


def _as_labels(column: pd.Series) -> pd.Series:
    """Label values as strings (integral floats from Parquet as integers); missing stay NaN."""
    if pd.api.types.is_float_dtype(column):
        present = column.dropna()
        if len(present) and np.all(np.mod(present, 1) == 0):
            column = column.astype("Int64")
    present = column.notna()
    out = pd.Series(np.nan, index=column.index, dtype=object)
    out[present] = column[present].astype(str)
    return out


def read_manifest(path: Path) -> tuple[pd.DataFrame, str, int]:
    """(table of strings, row word, number of the first data row) of a CSV or Parquet manifest."""
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        frame = frame.apply(_as_labels)
        return frame.reset_index(drop=True), "row", 1
    frame = pd.read_csv(label_lines(read_label_text(path, "manifest")), dtype=str, keep_default_na=False,
                        na_values=[""], skipinitialspace=True)
    return frame, "line", 2


def _split_names(table: pd.DataFrame) -> pd.Series | None:
    """The split column as :func:`assign_splits` reads it (None without one)."""
    if "split" not in table.columns:
        return None
    return table["split"].fillna("").astype(str).str.strip().str.lower()


def assign_splits(table: pd.DataFrame, strata: pd.Series, val_fraction: float, test_fraction: float,
                  seed: int, where: str) -> tuple[np.ndarray, str]:
    """Split per row (the split column, completed with a val split, or drawn) and how it was made."""
    if "split" in table.columns:
        split = _split_names(table)
        bad = ~split.isin(SPLITS)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetError(f"{where}: {table['source'].iloc[i]}: split {table['split'].iloc[i]!r} is not one of "
                               f"{', '.join(SPLITS)}")
        out = split.to_numpy(dtype=object)
        if (out == "val").any():
            return out, "the manifest's split column"
        train = np.flatnonzero(out == "train")
        out[train] = splitting.stratified_split(strata.iloc[train].to_numpy(), {"val": val_fraction}, seed)
        return out, ("the manifest's split column; "
                     + splitting.describe({"val": val_fraction}, seed, "group", "its train rows"))
    fractions = {"test": test_fraction, "val": val_fraction}
    if "identity" in table.columns:
        ids = table["identity"].fillna("").astype(str)
        first = pd.DataFrame({"id": ids, "stratum": strata}).drop_duplicates("id")
        per_id = splitting.stratified_split(first["stratum"].to_numpy(), fractions, seed)
        lookup = dict(zip(first["id"], per_id))
        return ids.map(lookup).to_numpy(dtype=object), (
            "drawn by identity (no person in two splits): "
            + splitting.describe(fractions, seed, "the group of each identity's first image", "the identities"))
    return splitting.stratified_split(strata.to_numpy(), fractions, seed), (
        "drawn: " + splitting.describe(fractions, seed, "group", "all rows"))


def bundle_from_table(
    name: str, table: pd.DataFrame, image_root: Path, task: Task, image_size: int, *,
    val_fraction: float, test_fraction: float, split_seed: int, on_bad_image: str, cache_dir: Path | None,
    where: str, info: dict[str, Any] | None = None, strata_columns: Sequence[str] | None = None,
    classes: list[str] | None = None, value_order: dict[str, list[str]] | None = None,
    targets: Sequence[str] = (), splits: Sequence[str] = SPLITS,
) -> DatasetBundle:
    """A bundle from a manifest table (columns: path, source, optional split / identity, labels)."""
    check_columns(name, table, task, where, targets or [c for c in table.columns if c not in (*RESERVED, "source")])
    strata_cols = list(strata_columns or task.protected)
    strata = table[strata_cols[0]].astype(str)
    for col in strata_cols[1:]:
        strata = strata + "|" + table[col].astype(str)
    table = table.copy()
    table["split"], protocol = assign_splits(table, strata, val_fraction, test_fraction, split_seed, where)
    info = {**(info or {}), "protocol": protocol, "on_bad_image": on_bad_image}
    return build_bundle(name, table, image_root, task, image_size, classes=classes, cache_dir=cache_dir,
                        on_bad_image=on_bad_image, info=info, value_order=value_order, targets=targets, splits=splits)


@register_dataset("manifest")
class Manifest(Dataset):
    summary = "Generic manifest (CSV / Parquet: path, split, identity, labels); --target / --protected name columns"
    Options = ManifestOptions
    default_target = "target"
    default_protected = ("group",)
    profile = "paper"
    default_image_size = 224
    target_concepts = {"gender": "gender"}

    def _files(self) -> tuple[Path, Path]:
        """(manifest file, image root)."""
        opts: ManifestOptions = self.options  # type: ignore[assignment]
        root, where = data_root(SOURCE, self.root)
        if root.is_file():
            manifest, folder = root, root.parent
        else:
            folder = root
            if opts.manifest:
                manifest = Path(opts.manifest).expanduser()
                manifest = manifest if manifest.is_absolute() else root / manifest
            else:
                manifest = next((root / n for n in DEFAULT_NAMES if (root / n).is_file()), root / DEFAULT_NAMES[0])
            if not manifest.is_file():
                raise DatasetError(
                    f"manifest: no manifest file {manifest} (data root from {where}). Expected a CSV / Parquet file "
                    "with a path column and label columns: pass it as --data-root FILE, put manifest.csv in the "
                    "root, or name it with --set data.options.manifest=FILE")
        if opts.images_root:
            images = Path(opts.images_root).expanduser()
            folder = images if images.is_absolute() else folder / images
        return manifest, folder

    def targets(self) -> list[str]:
        if self.root is None:
            return [self.default_target]
        manifest, _ = self._files()
        table, _, _ = read_manifest(manifest)
        return [c for c in table.columns if c not in RESERVED]

    def load(self, task: Task, image_size: int, splits: Sequence[str] = SPLITS) -> DatasetBundle:
        opts: ManifestOptions = self.options  # type: ignore[assignment]
        manifest, images = self._files()
        table, word, first = read_manifest(manifest)
        if "path" not in table.columns:
            raise DatasetError(f"manifest: {manifest} has no 'path' column; columns: {', '.join(table.columns)}")
        table["source"] = [f"{manifest.name} {word} {first + i}" for i in range(len(table))]
        if table.empty:
            raise DatasetError(f"manifest: {manifest} has no rows")
        table["path"] = [safe_relative(p if isinstance(p, str) else "", images, f"manifest: {manifest} ({s})")
                         for p, s in zip(table["path"], table["source"])]
        # the same image twice: double weight in training, or trained on and scored as held out
        check_each_path_once(f"manifest: {manifest}", table, _split_names(table))
        labels = [c for c in table.columns if c not in (*RESERVED, "source")]
        if task.target not in table.columns:
            raise DatasetError(f"manifest: {manifest} has no target column {task.target!r}; pass --target COLUMN "
                               f"(and --protected COL1,COL2) naming label columns: {', '.join(labels)}")
        return bundle_from_table(
            f"manifest-{manifest.stem}", table, images, task, image_size, val_fraction=opts.val_fraction,
            test_fraction=opts.test_fraction, split_seed=opts.split_seed, on_bad_image=opts.on_bad_image,
            cache_dir=self.cache_dir, where=str(manifest), targets=labels, splits=splits,
            info={"manifest": str(manifest), "images_root": str(images)},
        )
