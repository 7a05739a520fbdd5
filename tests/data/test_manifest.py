"""Generic manifest: CSV / Parquet, splits given or drawn, paths kept inside the root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.data.base import DatasetError, Task
from fairbench.data.manifest import Manifest, ManifestOptions
from fairbench.data.sources import safe_relative

from tests.kit import DatasetFixture, write_jpegs


# -- the miniature copy, official layout (write_fixture: found by name by test_registry_contracts) --

def write_manifest(root: Path, *, n: int = 24, split_column: bool = True, escaping: str | None = None,
                   fmt: str = "csv", gender_values: tuple[str, str] = ("Male", "Female"), seed: int = 4) -> Path:
    """``root/manifest.csv`` (or .parquet): path, split, identity, gender, race, smiling; images in ``root/img``.

    ``escaping`` adds one row whose path leaves the root (e.g. ``../outside.jpg``)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rows.append({
            "path": f"img/{i:03d}.jpg",
            "split": ["train", "train", "train", "val", "test"][i % 5] if split_column else None,
            "identity": f"id{i // 2}",
            "gender": gender_values[i % 2],
            "race": ["A", "B"][(i // 2) % 2],
            "smiling": str(int(i % 3 == 0)),
        })
    write_jpegs([root / r["path"] for r in rows], (96, 96), seed)
    if escaping is not None:
        rows.append({**rows[0], "path": escaping})
    frame = pd.DataFrame(rows)
    if not split_column:
        frame = frame.drop(columns="split")
    path = root / f"manifest.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def write_fixture(root: Path) -> DatasetFixture:
    write_manifest(root)
    return DatasetFixture(task=Task("smiling", ("gender",)))


# -- tests ------------------------------------------------------------------------------------------

TASK = Task("smiling", ("gender", "race"))


def load(root, cache, task=TASK, **options):
    return Manifest(root, ManifestOptions(**options), cache).load(task, 32)


def test_csv_with_split_column(tmp_path):
    write_manifest(tmp_path / "m")
    b = load(tmp_path / "m", tmp_path / "c")
    assert b.classes == ["0", "1"]
    assert b.group_names == ["Female|A", "Female|B", "Male|A", "Male|B"]
    frame = pd.read_csv(tmp_path / "m" / "manifest.csv", dtype=str)
    for split in ("train", "val", "test"):
        expected = frame[frame["split"] == split]
        assert list(b.splits[split].sample_ids) == list(expected["path"])
        assert list(b.splits[split].targets) == [int(v) for v in expected["smiling"]]
    assert b.info["protocol"] == "the manifest's split column"
    assert Manifest(tmp_path / "m").targets() == ["gender", "race", "smiling"]


def test_parquet_and_manifest_file_as_root(tmp_path):
    path = write_manifest(tmp_path / "m", fmt="parquet")
    a = load(tmp_path / "m", tmp_path / "c")
    b = load(path, tmp_path / "c")  # the file itself as --data-root
    np.testing.assert_array_equal(a.splits["test"].sample_ids, b.splits["test"].sample_ids)
    assert a.classes == ["0", "1"]


def test_drawn_splits_keep_identities_together(tmp_path):
    write_manifest(tmp_path / "m", n=60, split_column=False)
    b = load(tmp_path / "m", tmp_path / "c", task=Task("smiling", ("gender",)))
    frame = pd.read_csv(tmp_path / "m" / "manifest.csv", dtype=str).set_index("path")
    where = {}
    for split, data in b.splits.items():
        for sid in data.sample_ids:
            where.setdefault(frame.loc[sid, "identity"], set()).add(split)
    assert all(len(s) == 1 for s in where.values())
    assert "by identity" in b.info["protocol"]
    again = load(tmp_path / "m", tmp_path / "c", task=Task("smiling", ("gender",)))
    np.testing.assert_array_equal(again.splits["val"].sample_ids, b.splits["val"].sample_ids)


def test_val_drawn_from_train_when_the_split_column_has_none(tmp_path):
    path = write_manifest(tmp_path / "m")
    frame = pd.read_csv(path, dtype=str)
    frame["split"] = frame["split"].replace({"val": "train"})
    frame.to_csv(path, index=False)
    b = load(tmp_path / "m", tmp_path / "c")
    assert len(b.splits["val"]) == 4  # one per group
    assert "val = 10% of its train rows" in b.info["protocol"]


@pytest.mark.parametrize("escaping", ["../outside.jpg", "img/../../outside.jpg", "/etc/passwd"])
def test_paths_may_not_leave_the_root(tmp_path, escaping):
    write_manifest(tmp_path / "m", escaping=escaping)
    with pytest.raises(DatasetError) as err:
        load(tmp_path / "m", tmp_path / "c")
    assert "manifest.csv line 26" in str(err.value) and escaping in str(err.value)


def test_absolute_paths_inside_the_root_are_fine(tmp_path):
    root = tmp_path / "m"
    assert safe_relative(str(root / "img" / "001.jpg"), root, "x") == "img/001.jpg"
    assert safe_relative("img\\001.jpg", root, "x") == "img/001.jpg"
    with pytest.raises(DatasetError, match="outside the data root"):
        safe_relative(str(tmp_path / "elsewhere.jpg"), root, "x")


@pytest.mark.parametrize("column, value, message", [
    ("gender", "", "empty 'gender' value for img/003.jpg \\(manifest.csv line 5\\)"),
    ("smiling", "", "empty 'smiling' value"),
    ("split", "validation", "manifest.csv line 5: split 'validation' is not one of train, val, test"),
])
def test_bad_rows_name_the_row(tmp_path, column, value, message):
    path = write_manifest(tmp_path / "m")
    frame = pd.read_csv(path, dtype=str)
    frame.loc[3, column] = value
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=message):
        load(tmp_path / "m", tmp_path / "c")


def test_missing_columns_files_and_empty_splits(tmp_path, monkeypatch):
    write_manifest(tmp_path / "m")
    with pytest.raises(DatasetError, match="no target column 'target'.*--target COLUMN.*gender, race, smiling"):
        load(tmp_path / "m", tmp_path / "c", task=Task(Manifest.default_target, Manifest.default_protected))
    with pytest.raises(DatasetError, match="protected attribute\\(s\\) \\['age'\\]"):
        load(tmp_path / "m", tmp_path / "c", task=Task("smiling", ("age",)))
    path = tmp_path / "m" / "manifest.csv"
    frame = pd.read_csv(path, dtype=str)
    frame[frame["split"] != "test"].to_csv(path, index=False)
    with pytest.raises(DatasetError, match="the 'test' split is empty"):
        load(tmp_path / "m", tmp_path / "c")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="no manifest file"):
        load(tmp_path / "nothing", tmp_path / "c")
    monkeypatch.delenv("FAIRBENCH_MANIFEST_ROOT", raising=False)
    with pytest.raises(DatasetError, match="FAIRBENCH_MANIFEST_ROOT"):
        load(None, tmp_path / "c")


def test_missing_image_names_file_and_row(tmp_path):
    write_manifest(tmp_path / "m")
    (tmp_path / "m" / "img" / "007.jpg").unlink()
    with pytest.raises(DatasetError, match="007.jpg \\(manifest.csv line 9\\): file is missing"):
        load(tmp_path / "m", tmp_path / "c")
    b = load(tmp_path / "m", tmp_path / "c", on_bad_image="skip")
    assert sum(b.info["skipped_images"].values()) == 1
