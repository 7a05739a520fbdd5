"""UTKFace: strict file-name labels, malformed names skipped and listed, fixed-seed splits."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fairbench.data.base import DataNotice, DatasetError, Task, fingerprint_only
from fairbench.data.utkface import RACES, UTKFace, UTKFaceOptions, parse_name

from tests.kit import DatasetFixture, corrupt_file, write_jpegs


# -- the miniature copy, official layout (write_fixture: found by name by test_registry_contracts) --

#: malformed names found in the real UTKFace set (datasets.md): never parsed, skipped and listed
UTKFACE_MALFORMED = [
    "39_1_20170116174525125.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "61_1_20170109150557335.jpg.chip.jpg",
    "24_0_1_20170116220224657 .jpg.chip.jpg",
    "55_0_0_20170116232725357jpg.chip.jpg",
]


def utkface_name(age: int, gender: int, race: int, i: int) -> str:
    return f"{age}_{gender}_{race}_{20170116000000000 + 7919 * i:017d}.jpg.chip.jpg"


def write_utkface(root: Path, *, per_group: int = 4, malformed: bool = True, seed: int = 1) -> dict[str, Any]:
    """UTKFace aligned & cropped: ``root/UTKFace/[age]_[gender]_[race]_[datetime].jpg.chip.jpg``, 200 x 200."""
    folder = root / "UTKFace"
    names, labels = [], {}
    i = 0
    for race in range(5):
        for gender in range(2):
            for k in range(per_group):
                age = [1, 25, 47, 80, 116][(i + k) % 5]
                name = utkface_name(age, gender, race, i)
                names.append(name)
                labels[name] = {"age": age, "gender": ["Male", "Female"][gender], "race": RACES[race]}
                i += 1
    bad = UTKFACE_MALFORMED if malformed else []
    write_jpegs([folder / n for n in names + bad], (200, 200), seed)
    return {"folder": folder, "labels": labels, "malformed": bad}


def write_fixture(root: Path) -> DatasetFixture:
    write_utkface(root)
    return DatasetFixture()


# -- tests ------------------------------------------------------------------------------------------

TASK = Task("gender", ("race", "gender"))


def load(root, cache, task=TASK, **options):
    return UTKFace(root, UTKFaceOptions(**options), cache).load(task, 32)


@pytest.fixture
def utk(tmp_path):
    return write_utkface(tmp_path / "utk")


@pytest.mark.parametrize("name", UTKFACE_MALFORMED + [
    "117_0_0_20170116174525125.jpg.chip.jpg",  # age above 116
    "20_2_0_20170116174525125.jpg.chip.jpg",  # gender 2
    "20_0_5_20170116174525125.jpg.chip.jpg",  # race 5
    "20_0_0_201701161745251234.jpg.chip.jpg",  # 18-digit datetime
    "20_0_0_20170116174525125.jpg",  # in-the-wild name in the aligned set
])
def test_malformed_names_do_not_parse(name):
    assert parse_name(name) is None


def test_names_parse_into_the_shared_vocabulary():
    assert parse_name("26_1_3_20170119180049574.jpg.chip.jpg") == {
        "age": "26", "gender": "Female", "race": "Indian", "datetime": "20170119180049574"}
    # the release has a 16-digit datetime; every label of it is there, so it is read
    assert parse_name("14_0_0_2017011022340900.jpg.chip.jpg")["race"] == "White"
    assert [parse_name(utkface_name(30, 0, r, 0))["race"] for r in range(5)] == RACES


def test_loads_groups_labels_and_lists_malformed_names(utk, tmp_path):
    b = load(tmp_path / "utk", tmp_path / "c")
    assert b.classes == ["Female", "Male"]
    assert len(b.group_names) == 10 and b.group_names[:2] == ["White|Male", "White|Female"]
    assert sorted(b.info["malformed_names"]["names"]) == sorted(UTKFACE_MALFORMED)
    assert b.info["malformed_names"]["count"] == 5 and b.info["parsed_images"] == 40
    ids = [i for s in b.splits.values() for i in s.sample_ids]
    assert len(ids) == len(set(ids)) == 40 and not set(ids) & set(UTKFACE_MALFORMED)
    for split in b.splits.values():
        assert len(set(split.group_labels(TASK.protected))) == 10  # 4 per group: 1 test, 1 val, 2 train
        for sid, target, race, gender in zip(split.sample_ids, split.targets, split.attributes["race"],
                                             split.attributes["gender"]):
            expected = utk["labels"][sid]
            assert (b.classes[target], race, gender) == (expected["gender"], expected["race"], expected["gender"])
    assert "split_seed 0" in b.info["protocol"]


def test_split_is_fixed_by_seed_and_race_is_a_target(utk, tmp_path):
    a = load(tmp_path / "utk", tmp_path / "c")
    b = load(tmp_path / "utk", tmp_path / "c")
    c = load(tmp_path / "utk", tmp_path / "c", split_seed=5)
    np.testing.assert_array_equal(a.splits["test"].sample_ids, b.splits["test"].sample_ids)
    assert set(a.splits["test"].sample_ids) != set(c.splits["test"].sample_ids)
    race = load(tmp_path / "utk", tmp_path / "c", task=Task("race", ("gender",)))
    assert race.classes == RACES
    with pytest.raises(DatasetError, match="no target 'age'"):
        load(tmp_path / "utk", tmp_path / "c", task=Task("age", ("gender",)))


def test_root_may_be_the_image_folder_itself(utk, tmp_path):
    b = load(utk["folder"], tmp_path / "c")
    assert sum(len(s) for s in b.splits.values()) == 40


def test_corrupt_image_names_the_file_or_is_skipped(utk, tmp_path):
    victim = sorted(utk["labels"])[0]
    corrupt_file(utk["folder"] / victim)
    with pytest.raises(DatasetError) as err:
        load(tmp_path / "utk", tmp_path / "c")
    assert victim in str(err.value) and f"file name {victim}" in str(err.value)
    b = load(tmp_path / "utk", tmp_path / "c", on_bad_image="skip")
    assert sum(b.info["skipped_images"].values()) == 1
    assert sum(len(s) for s in b.splits.values()) == 39


def test_missing_and_empty_folders_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("FAIRBENCH_UTKFACE_ROOT", raising=False)
    with pytest.raises(DatasetError) as err:
        load(None, tmp_path / "c")
    assert "FAIRBENCH_UTKFACE_ROOT" in str(err.value) and "susanqq.github.io/UTKFace" in str(err.value)
    (tmp_path / "empty" / "UTKFace").mkdir(parents=True)
    (tmp_path / "empty" / "UTKFace" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no file in"):
        load(tmp_path / "empty", tmp_path / "c")


# -- the real UTKFace "part 1" folder (research use only: read in place, nothing copied) --------------

UTKFACE_PART1 = Path(__file__).parents[2] / ".." / "shared" / "data" / "utkface-part1"
needs_part1 = pytest.mark.skipif(not (UTKFACE_PART1 / "UTKFace").is_dir(), reason="needs ../shared/data/utkface-part1")


@needs_part1
def test_real_folder_gives_every_groups_support_and_reports_the_malformed_names(tmp_path):
    """The loader's label table against a count made here from the file names with str.split:
    the same support for each of the 10 race x gender groups; the names without 4 fields are
    skipped, listed in info and said in one warning. No image is decoded."""
    counted, lacking = Counter(), []
    for name in os.listdir(UTKFACE_PART1 / "UTKFace"):
        fields = name.split(".")[0].split("_")  # age, gender, race, datetime
        if len(fields) != 4:
            lacking.append(name)
            continue
        counted[(RACES[int(fields[2])], {"0": "Male", "1": "Female"}[fields[1]])] += 1
    assert len(counted) == 10 and len(lacking) == 2  # what the folder's README says

    ds = UTKFace(UTKFACE_PART1, UTKFaceOptions(), tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, _, info = ds.label_table()
        with fingerprint_only() as fingerprint:  # load as a run does, decoding nothing
            bundle = ds.load(TASK, 32)
    assert table.groupby(["race", "gender"]).size().to_dict() == dict(counted)
    assert sorted(info["malformed_names"]["names"]) == sorted(lacking)
    assert sorted(bundle.info["malformed_names"]["names"]) == sorted(lacking)
    assert fingerprint["images"] == sum(counted.values()) and not list((tmp_path / "cache").glob("*"))
    # every group in every split (the split is stratified by race x gender)
    per_split = table.groupby(["split", "race", "gender"]).size()
    assert all(len(per_split[split]) == 10 for split in ("train", "val", "test"))
    notices = [str(w.message) for w in caught if issubclass(w.category, DataNotice)]
    assert len(notices) == 1 and "\n" not in notices[0]  # one line, not repeated by the fingerprint pass
    assert notices[0].startswith("utkface: skipped 2 file(s)") and all(n in notices[0] for n in lacking)
