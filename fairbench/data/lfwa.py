"""LFWA+ (Liu et al., ICCV 2015, from the CelebA authors' page): LFW faces with attributes.

Reads ``lfw/``, ``lfw_att_73.mat`` (+ optional ``lfw_att_40.mat``) and ``indices_train_test.mat``
(MATLAB v7.3 = HDF5, read with h5py). :func:`convert` turns them into the generic manifest, cached
on first use (``python -m fairbench.data.lfwa ROOT OUT.csv`` writes one by hand). Race is the one
race flag set; rows with several or none get race ``Undefined`` (counted). Protocol: the official
train / test indices, val a fixed-seed stratified share of train.
Files, keys, demographics and protocol: docs/real-datasets.md#lfwa
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fairbench.data import vocab
from fairbench.data.base import SPLITS, DatasetBundle, DatasetError, Task
from fairbench.data.face import FaceDataset, OnBadImage, SplitSeed, ValFraction
from fairbench.data.manifest import bundle_from_table, read_manifest
from fairbench.data.sources import Source, locate, safe_relative
from fairbench.registry import register_dataset

SOURCE = Source(
    "lfwa", "FAIRBENCH_LFWA_ROOT",
    required=[("lfw_att_73.mat", "indices_train_test.mat", "lfw/")],
    get_from="the CelebA authors' page, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (LFWA+: lfw.zip and "
             "the attribute / index .mat files)",
)
RACE_FLAGS = ("Asian", "White", "Black", "Indian")
UNDEFINED_RACE = "Undefined"  # rows with several or no race flag set (the paper's Table 1 name)
CONVERTER_VERSION = 1


class LFWAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    race_undefined: Literal["group", "drop"] = Field(
        "group", description="rows with several / no race flag: race 'Undefined' (group), or left out (drop)")
    val_fraction: ValFraction = 0.1
    split_seed: SplitSeed = 0
    on_bad_image: OnBadImage = "error"


# -- reading MATLAB v7.3 --------------------------------------------------------------------------------

def _strings(f, key: str, path: Path) -> list[str]:
    """A cell array of strings: object references to uint16 character arrays."""
    import h5py

    if key not in f:
        raise DatasetError(f"lfwa: {path} has no {key!r} (keys: {sorted(f.keys())}); is it the LFWA+ file?")
    refs = f[key][()]
    out = []
    for ref in np.asarray(refs).ravel():
        if not isinstance(ref, h5py.Reference):
            raise DatasetError(f"lfwa: {path}: {key!r} is not a MATLAB cell array of strings")
        chars = np.asarray(f[ref][()]).ravel()
        out.append("".join(chr(int(c)) for c in chars))
    return out


def read_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, image names, labels rows x attributes in {0, 1}) of an ``lfw_att_*.mat``."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"lfwa: cannot read {path} as a MATLAB v7.3 (HDF5) file: {exc}") from None
    with f:
        attrs = _strings(f, "AttrName", path)
        names = _strings(f, "name", path)
        if "label" not in f:
            raise DatasetError(f"lfwa: {path} has no 'label' (keys: {sorted(f.keys())})")
        label = np.asarray(f["label"][()])
    if label.shape == (len(attrs), len(names)):
        label = label.T  # MATLAB's column-major rows x attributes, as h5py reads it
    if label.shape != (len(names), len(attrs)):
        raise DatasetError(f"lfwa: {path}: label has shape {label.shape}, expected {len(attrs)} attributes x "
                           f"{len(names)} names (or its transpose)")
    bad = ~np.isin(label, (0, 1))
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise DatasetError(f"lfwa: {path}: row {r + 1} ({names[r]}), {attrs[c]} = {float(label[r, c]):g}; labels must be 0 / 1")
    return attrs, names, label.astype(np.int8)


def read_indices(path: Path, n_rows: int) -> dict[str, np.ndarray]:
    """0-based row indices of train and test (the file's are 1-based)."""
    import h5py

    out = {}
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"lfwa: cannot read {path} as a MATLAB v7.3 (HDF5) file: {exc}") from None
    with f:
        for split in ("train", "test"):
            key = f"indices_img_{split}"
            if key not in f:
                raise DatasetError(f"lfwa: {path} has no {key!r} (keys: {sorted(f.keys())})")
            values = np.asarray(f[key][()]).ravel()
            if not np.all(np.mod(values, 1) == 0) or values.min(initial=1) < 1 or values.max(initial=1) > n_rows:
                raise DatasetError(f"lfwa: {path}: {key} must hold 1-based row numbers 1..{n_rows} of the attribute "
                                   f"files, found {values.min(initial=0):g}..{values.max(initial=0):g}")
            out[split] = values.astype(np.int64) - 1
    return out


def _image_path(name: str, root: Path, row: int) -> str:
    rel = safe_relative(name, root, f"lfwa: name of row {row}")
    parts = rel.split("/")
    return "/".join(["lfw", *(parts[1:] if parts[0] == "lfw" else parts)])


def convert(root: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The LFWA+ files under ``root`` as a generic manifest table, and what the conversion counted."""
    attrs73, names, labels73 = read_attribute_file(root / "lfw_att_73.mat")
    missing = [a for a in ("Male", *RACE_FLAGS) if a not in attrs73]
    if missing:
        raise DatasetError(f"lfwa: {root / 'lfw_att_73.mat'} lacks the attribute(s) {missing}; found {attrs73}")
    columns: dict[str, np.ndarray] = {}
    att40 = root / "lfw_att_40.mat"
    if att40.is_file():
        attrs40, names40, labels40 = read_attribute_file(att40)
        if names40 != names:
            raise DatasetError(f"lfwa: {att40} and lfw_att_73.mat list different images (or in another order)")
        columns.update({a: labels40[:, i] for i, a in enumerate(attrs40)})
    columns.update({a: labels73[:, i] for i, a in enumerate(attrs73) if a not in columns})
    indices = read_indices(root / "indices_train_test.mat", len(names))
    split = np.full(len(names), "", dtype=object)
    split[indices["train"]] = "train"
    split[indices["test"]] = "test"  # a row in both lists stays out of train
    both = np.intersect1d(indices["train"], indices["test"])
    male = labels73[:, attrs73.index("Male")]
    flags = np.stack([labels73[:, attrs73.index(r)] for r in RACE_FLAGS], axis=1)
    one_race = flags.sum(1) == 1
    race = np.where(one_race, np.asarray(RACE_FLAGS, dtype=object)[flags.argmax(1)], UNDEFINED_RACE)
    paths = [_image_path(n, root, i + 1) for i, n in enumerate(names)]
    table = pd.DataFrame({
        "path": paths,
        "split": split,
        "identity": [p.split("/")[1] if p.count("/") >= 2 else "" for p in paths],
        "gender": np.where(male == 1, "Male", "Female"),
        "race": race,
        **{a: v.astype(str) for a, v in columns.items()},
    })
    report = {
        "rows": len(table),
        "train_indices": int(len(indices["train"])), "test_indices": int(len(indices["test"])),
        "in_train_and_test": int(len(both)),
        "in_neither": int((split == "").sum()),
        "race_several_flags": int((flags.sum(1) > 1).sum()),
        "race_no_flag": int((flags.sum(1) == 0).sum()),
        "attribute_files": ["lfw_att_73.mat"] + (["lfw_att_40.mat"] if att40.is_file() else []),
    }
    return table[table["split"] != ""].reset_index(drop=True), report


def _manifest_path(root: Path, cache_dir: Path | None) -> Path:
    from fairbench.data.image_cache import default_cache_dir

    stamps = []
    for name in ("lfw_att_73.mat", "lfw_att_40.mat", "indices_train_test.mat"):
        p = root / name
        st = p.stat() if p.is_file() else None
        stamps.append([str(p.absolute()), st.st_size if st else None, st.st_mtime_ns if st else None])
    key = hashlib.sha256(json.dumps([CONVERTER_VERSION, stamps]).encode()).hexdigest()[:16]
    return Path(cache_dir or default_cache_dir()).expanduser() / f"lfwa-manifest-{key}.csv"


def converted_manifest(root: Path, cache_dir: Path | None) -> tuple[pd.DataFrame, dict[str, Any], Path]:
    """The manifest of ``root``, converted on first use and kept in the cache folder."""
    from fairbench.runs.store import atomic_write_csv, atomic_write_json

    path = _manifest_path(root, cache_dir)
    report_path = path.with_suffix(".json")
    if path.is_file() and report_path.is_file():
        table, _, _ = read_manifest(path)
        return table, json.loads(report_path.read_text()), path
    table, report = convert(root)
    atomic_write_csv(path, table)
    atomic_write_json(report_path, report)
    return table, report, path


@register_dataset("lfwa")
class LFWA(FaceDataset):
    """Its attribute targets are those of the files (lfw_att_40.mat is optional), so it keeps its own
    ``targets`` and ``load``, which assembles through the manifest path (val drawn from train)."""

    summary = "LFWA+: gender ~ race (White/Black/Asian/Indian/Undefined) x gender; official train/test indices"
    Options = LFWAOptions
    race_order = [*vocab.RACE4_ORDER, UNDEFINED_RACE]

    def targets(self) -> list[str]:
        return ["gender", "race", *vocab.CELEBA_ATTRIBUTES]

    def load(self, task: Task, image_size: int, splits: Sequence[str] = SPLITS) -> DatasetBundle:
        opts: LFWAOptions = self.options  # type: ignore[assignment]
        root, _ = locate(SOURCE, self.root)
        table, report, manifest = converted_manifest(root, self.cache_dir)
        table["source"] = [f"{manifest.name} line {i + 2} (LFWA+ row of {p})" for i, p in enumerate(table["path"])]
        undefined = table["race"] == UNDEFINED_RACE
        dropped = 0
        if opts.race_undefined == "drop":
            dropped = int(undefined.sum())
            table = table[~undefined].reset_index(drop=True)
        attributes = [c for c in table.columns if c not in ("path", "split", "identity", "gender", "race", "source")]
        if task.target == "gender":
            classes = vocab.GENDER_CLASSES
        elif task.target == "race":
            classes = [*vocab.RACE4, *([] if opts.race_undefined == "drop" else [UNDEFINED_RACE])]
        elif task.target in attributes:
            classes = vocab.BINARY_CLASSES
        else:
            raise DatasetError(f"lfwa has no target {task.target!r}; choose gender, race or an attribute: "
                               f"{', '.join(attributes)}")
        for col in dict.fromkeys((task.target, *task.protected)):
            if col in attributes:
                table[col] = table[col].map({"0": "no", "1": "yes"})
        info = {
            "conversion": report,
            "manifest": str(manifest),
            "race_undefined": {"rule": "several or no race flag set -> race 'Undefined'",
                               "count": int(undefined.sum()), "policy": opts.race_undefined, "dropped": dropped},
        }
        return bundle_from_table(
            "lfwa", table, root, task, image_size, val_fraction=opts.val_fraction, test_fraction=0.2,
            split_seed=opts.split_seed, on_bad_image=opts.on_bad_image, cache_dir=self.cache_dir,
            where=str(manifest), info=info, strata_columns=("race", "gender"), classes=list(classes),
            value_order=self.value_order(), targets=["gender", "race", *attributes], splits=splits,
        )


def main(argv: list[str] | None = None) -> int:
    import argparse

    from fairbench.runs.store import atomic_write_csv

    parser = argparse.ArgumentParser(prog="python -m fairbench.data.lfwa",
                                     description="convert the LFWA+ .mat files to a generic fairbench manifest")
    parser.add_argument("root", type=Path, help="folder with lfw/, lfw_att_73.mat, indices_train_test.mat")
    parser.add_argument("output", type=Path, help="manifest CSV to write (use it with --dataset manifest)")
    args = parser.parse_args(argv)
    table, report = convert(args.root)
    atomic_write_csv(args.output, table)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.output}: use it with --dataset manifest --data-root {args.output} "
          f"--set data.options.images_root={args.root.absolute()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
