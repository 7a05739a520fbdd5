"""UTKFace: strict file-name labels, malformed names skipped and listed, fixed-seed splits."""

from __future__ import annotations

import numpy as np
import pytest

from fairbench.datasets import vocab
from fairbench.datasets.base import DatasetError, Task
from fairbench.datasets.utkface import UTKFace, UTKFaceOptions, parse_name

from .fixtures_datasets import UTKFACE_MALFORMED, corrupt_file, utkface_name, write_utkface

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
    "20_0_0_2017011617452512.jpg.chip.jpg",  # 16-digit datetime
    "20_0_0_20170116174525125.jpg",  # in-the-wild name in the aligned set
])
def test_malformed_names_do_not_parse(name):
    assert parse_name(name) is None


def test_names_parse_into_the_shared_vocabulary():
    assert parse_name("26_1_3_20170119180049574.jpg.chip.jpg") == {
        "age": "26", "gender": "Female", "race": "Indian", "datetime": "20170119180049574"}
    assert [parse_name(utkface_name(30, 0, r, 0))["race"] for r in range(5)] == vocab.UTK_RACES


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
    assert race.classes == vocab.UTK_RACES
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
