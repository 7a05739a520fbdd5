"""FairFace: the official layout, the protocol, damaged CSVs, bad files, and a whole run on real faces."""

from __future__ import annotations

import itertools
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fairbench.data import vocab
from fairbench.data.base import DatasetError, Task
from fairbench.data.fairface import AGES, RACE7, FairFace, FairFaceOptions, SpreadsheetNotice

from tests.conftest import FAIRFACE_SAMPLE
from tests.kit import DatasetFixture, corrupt_file, truncate_file, write_jpegs


# -- the miniature copy, official layout (write_fixture: found by name by test_registry_contracts) --

FAIRFACE_HEADER = "file,age,gender,race,service_test"
# Excel's damage to the age bins and booleans (datasets.md): the forms a loader must normalise
FAIRFACE_DAMAGED_AGES = {"3-9": ["9-Mar", "03-Sep"], "10-19": ["19-Oct", "Oct-19"]}


def write_fairface(root: Path, *, train_per_group: int = 3, val_per_group: int = 1, damaged: bool = False,
                   images_dir: str | None = None, size: int = 224, seed: int = 0) -> dict[str, Any]:
    """FairFace: label CSVs in ``root``; ``train/<n>.jpg``, ``val/<n>.jpg`` in ``root/images_dir`` (or root).

    With ``damaged``, the CSVs look re-saved by a spreadsheet: ``9-Mar`` / ``03-Sep`` for 3-9,
    ``19-Oct`` / ``Oct-19`` for 10-19, ``TRUE`` / ``FALSE``."""
    root.mkdir(parents=True, exist_ok=True)
    image_root = root / images_dir if images_dir else root
    groups = list(itertools.product(RACE7, ["Male", "Female"]))
    ages = itertools.cycle(AGES)
    damage = {age: itertools.cycle(forms) for age, forms in FAIRFACE_DAMAGED_AGES.items()}
    rows: dict[str, list[list[str]]] = {"train": [], "val": []}
    numbers = {"train": itertools.count(1), "val": itertools.count(1)}
    for split, per_group in (("train", train_per_group), ("val", val_per_group)):
        for race, gender in groups:
            for _ in range(per_group):
                age = next(ages)
                service = "True" if len(rows[split]) % 3 == 0 else "False"
                if damaged and age in FAIRFACE_DAMAGED_AGES:
                    age = next(damage[age])
                if damaged:
                    service = service.upper()
                rows[split].append([f"{split}/{next(numbers[split])}.jpg", age, gender, race, service])
    for split, name in (("train", "fairface_label_train.csv"), ("val", "fairface_label_val.csv")):
        lines = [FAIRFACE_HEADER] + [",".join(r) for r in rows[split]]
        (root / name).write_text("\n".join(lines) + "\n")
        write_jpegs([image_root / r[0] for r in rows[split]], (size, size), seed + (split == "val"))
    return {"rows": rows, "image_root": image_root}


def write_fixture(root: Path) -> DatasetFixture:
    write_fairface(root)
    return DatasetFixture()


# -- tests ------------------------------------------------------------------------------------------

TASK = Task("gender", ("race", "gender"))


def load(root, cache, task=TASK, size=32, **options):
    return FairFace(root, FairFaceOptions(**options), cache).load(task, size)


@pytest.fixture
def fairface(tmp_path):
    write_fairface(tmp_path / "ff")
    return tmp_path / "ff"


def test_protocol_groups_and_labels(fairface, tmp_path):
    b = load(fairface, tmp_path / "cache")
    assert b.classes == ["Female", "Male"]
    assert len(b.group_names) == 14 and b.group_names[:2] == ["White|Male", "White|Female"]
    # 3 train images per group: 10% rounds to 0, the rule keeps one per group in val
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 28, "val": 14, "test": 14}
    for split in ("train", "val", "test"):
        groups, counts = np.unique(b.splits[split].group_labels(TASK.protected), return_counts=True)
        assert len(groups) == 14, split
    assert set(b.splits["val"].sample_ids).isdisjoint(b.splits["train"].sample_ids)
    assert all(s.startswith("train/") for s in b.splits["val"].sample_ids)
    assert all(s.startswith("val/") for s in b.splits["test"].sample_ids)  # test = official val
    assert "test = official val" in b.info["protocol"] and "split_seed 0" in b.info["protocol"]
    # labels come from the CSV rows
    rows = {r[0]: r for r in (fairface / "fairface_label_val.csv").read_text().splitlines()[1:] for r in [r.split(",")]}
    test = b.splits["test"]
    for sid, target, race in zip(test.sample_ids, test.targets, test.attributes["race"]):
        assert b.classes[target] == rows[sid][2] and race == rows[sid][3]


def test_split_is_fixed_by_seed(fairface, tmp_path):
    ids = lambda b: sorted(b.splits["val"].sample_ids)  # noqa: E731
    a = load(fairface, tmp_path / "c")
    assert ids(a) == ids(load(fairface, tmp_path / "c"))
    assert ids(a) != ids(load(fairface, tmp_path / "c", split_seed=1))
    bigger = load(fairface, tmp_path / "c", val_fraction=0.5)
    assert len(bigger.splits["val"]) == 28  # round(0.5 * 3) = 2 per group


def test_race4_view_drops_latino_and_keeps_the_other_assignments(fairface, tmp_path):
    b7 = load(fairface, tmp_path / "c")
    b4 = load(fairface, tmp_path / "c", race_view="race4")
    assert sorted({g.split("|")[0] for g in b4.group_names}) == sorted(vocab.RACE4)
    assert len(b4.group_names) == 8
    assert b4.info["excluded_latino_hispanic"] == {"train": 4, "val": 2, "test": 2}  # both genders
    latino = {s for s, r in zip(b7.splits["val"].sample_ids, b7.splits["val"].attributes["race"]) if r == "Latino_Hispanic"}
    assert set(b4.splits["val"].sample_ids) == set(b7.splits["val"].sample_ids) - latino
    race_b4 = load(fairface, tmp_path / "c", task=Task("race", ("gender",)), race_view="race4")
    assert race_b4.classes == vocab.RACE4


def test_images_in_their_own_folder(tmp_path):
    write_fairface(tmp_path / "ff", images_dir="fairface-img-margin025-trainval")
    b = load(tmp_path / "ff", tmp_path / "c")
    assert b.info["images_root"].endswith("fairface-img-margin025-trainval")
    (tmp_path / "ff" / "fairface-img-margin125-trainval").mkdir()
    with pytest.raises(DatasetError, match="choose one"):
        load(tmp_path / "ff", tmp_path / "c")
    b = load(tmp_path / "ff", tmp_path / "c", images_root="fairface-img-margin025-trainval")
    assert len(b.splits["test"]) == 14
    shutil.rmtree(tmp_path / "ff" / "fairface-img-margin025-trainval")
    (tmp_path / "ff" / "fairface-img-margin125-trainval").rmdir()
    with pytest.raises(DatasetError, match="no images"):
        load(tmp_path / "ff", tmp_path / "c")


def test_spreadsheet_damage_is_normalised_with_one_notice(tmp_path):
    write_fairface(tmp_path / "clean")
    write_fairface(tmp_path / "damaged", damaged=True)
    text = (tmp_path / "damaged" / "fairface_label_train.csv").read_text()
    assert all(form in text for form in ("9-Mar", "03-Sep", "19-Oct", "Oct-19", "TRUE", "FALSE"))
    task = Task("age", ("race", "gender"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        damaged = load(tmp_path / "damaged", tmp_path / "c", task=task)
    notices = [w for w in caught if issubclass(w.category, SpreadsheetNotice)]
    assert len(notices) == 1 and "9-Mar" in str(notices[0].message)
    assert damaged.info["normalised_spreadsheet_values"]["age '03-Sep' -> '3-9'"] > 0
    clean = load(tmp_path / "clean", tmp_path / "c", task=task)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(damaged.splits[split].targets, clean.splits[split].targets)
        np.testing.assert_array_equal(damaged.splits[split].sample_ids, clean.splits[split].sample_ids)


@pytest.mark.parametrize("bad, message", [
    ("train/2.jpg,3-9,Male,Martian,False", "line 3: unknown race 'Martian'"),
    ("train/2.jpg,9-Jun,Male,White,False", "line 3: unknown age '9-Jun'"),
    ("train/2.jpg,3-9,male,White,False", "line 3: unknown gender 'male'"),
    ("train/2.jpg,3-9,Male,White,yes", "line 3: unknown service_test 'yes'"),
    ("train/2.jpg,3-9,Male,White", "line 3: 4 fields"),
    ("../secret.jpg,3-9,Male,White,False", "contains '..'"),
    ("train/1.jpg,3-9,Male,White,False", "listed twice"),
])
def test_unknown_values_are_rejected_naming_the_row(fairface, tmp_path, bad, message):
    csv = fairface / "fairface_label_train.csv"
    lines = csv.read_text().splitlines()
    lines[2] = bad
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        load(fairface, tmp_path / "c")
    assert message in str(err.value) and "fairface_label_train.csv" in str(err.value)


def test_wrong_header_and_empty_file(fairface, tmp_path):
    csv = fairface / "fairface_label_val.csv"
    body = csv.read_text().splitlines()
    csv.write_text("file,age,gender,race\n" + "\n".join(body[1:]))
    with pytest.raises(DatasetError, match="line 1: header"):
        load(fairface, tmp_path / "c")
    csv.write_text(body[0] + "\n")
    with pytest.raises(DatasetError, match="has no label rows"):
        load(fairface, tmp_path / "c")


def test_an_image_in_both_label_files_is_an_error(fairface, tmp_path):
    """An image of the official train listed again in the official val (the test split) would be
    trained on and then scored as a test image: an error naming both rows, before any decoding."""
    csv = fairface / "fairface_label_val.csv"
    n_lines = len(csv.read_text().splitlines())
    csv.write_text(csv.read_text() + "train/1.jpg,3-9,Male,White,False\n")
    with pytest.raises(DatasetError, match=r"^fairface: train/1\.jpg is in the '(train|val)' split \(fairface_label_"
                       rf"train\.csv line 2\) and in the 'test' split \(fairface_label_val\.csv line {n_lines + 1}\)"):
        load(fairface, tmp_path / "c")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("damage", [truncate_file, corrupt_file, lambda p: p.unlink()])
def test_bad_image_error_names_file_and_row_or_is_skipped_and_counted(fairface, tmp_path, damage):
    # val/3.jpg is on line 4 of fairface_label_val.csv
    damage(fairface / "val" / "3.jpg")
    with pytest.raises(DatasetError) as err:
        load(fairface, tmp_path / "c")
    assert "val/3.jpg" in str(err.value) and "fairface_label_val.csv line 4" in str(err.value)
    b = load(fairface, tmp_path / "c", on_bad_image="skip")
    assert len(b.splits["test"]) == 13 and "val/3.jpg" not in set(b.splits["test"].sample_ids)
    assert b.info["skipped_images"] == {"test": 1}
    assert b.info["skipped_image_files"]["test"]["files"][0]["row"] == "fairface_label_val.csv line 4"


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FAIRBENCH_FAIRFACE_ROOT", raising=False)
    with pytest.raises(DatasetError) as err:
        load(None, tmp_path / "c")
    text = str(err.value)
    assert "FAIRBENCH_FAIRFACE_ROOT" in text and "fairface_label_train.csv" in text
    assert "github.com/joojs/fairface" in text and "--data-root" in text
    monkeypatch.setenv("FAIRBENCH_FAIRFACE_ROOT", str(tmp_path))
    with pytest.raises(DatasetError, match=r"(?s)\$FAIRBENCH_FAIRFACE_ROOT=.*missing fairface_label_train.csv"):
        load(None, tmp_path / "c")


# -- the real FairFace sample ------------------------------------------------------------------------------

needs_sample = pytest.mark.skipif(not (FAIRFACE_SAMPLE / "fairface_label_train.csv").is_file(),
                                  reason="../shared/data/fairface-sample is absent")


@needs_sample
def test_real_sample_loads_every_group_in_every_split(tmp_path):
    b = load(FAIRFACE_SAMPLE, tmp_path / "cache")
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 70, "val": 14, "test": 28}
    for split in b.splits.values():
        assert len(set(split.group_labels(TASK.protected))) == 14
    assert b.splits["train"].images.shape[1:] == (32, 32, 3)
    assert not any(p.is_relative_to(FAIRFACE_SAMPLE) for p in (tmp_path / "cache").iterdir())


@needs_sample
def test_whole_run_on_real_faces(tmp_path):
    """``fairbench run erm --dataset fairface --data-root ../shared/data/fairface-sample`` in miniature."""
    from fairbench.config import build_config, resolve
    from fairbench.runs.store import read_json
    from fairbench.training.run import execute

    cfg = resolve(build_config(None, {
        "method": "erm", "data.name": "fairface", "data.root": str(FAIRFACE_SAMPLE),
        "data.cache_dir": str(tmp_path / "cache"), "data.image_size": 32, "train.epochs": 1,
        "train.batch_size": 8, "train.device": "cpu", "train.workers": 0,
        "backbone.name": "resnet_tiny", "backbone.pretrained": False,
    }))
    assert (cfg.data.target, cfg.data.protected) == ("gender", ["race", "gender"])
    run = execute(cfg, tmp_path / "runs")
    meta = read_json(run / "dataset.json")
    assert meta["split_sizes"] == {"train": 70, "val": 14, "test": 28}
    assert all(len(meta["group_counts"][s]) == 14 for s in ("train", "val", "test"))
    assert "stratified by race (7) x gender" in meta["info"]["protocol"]
    metrics = read_json(run / "metrics.json")
    assert list(metrics["test"]["group_accuracy"])[:2] == ["White|Male", "White|Female"]
    assert len(metrics["test"]["group_accuracy"]) == 14
    assert metrics["test"]["n"] == 28
