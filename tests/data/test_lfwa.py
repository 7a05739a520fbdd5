"""LFWA+: MATLAB v7.3 (HDF5) files converted to the generic manifest, then loaded."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from fairbench.data import vocab
from fairbench.data.base import DatasetError, Task
from fairbench.data.lfwa import UNDEFINED_RACE, LFWA, LFWAOptions, convert, main, read_attribute_file

from tests.kit import DatasetFixture, write_jpegs


# -- the miniature copy, official layout (write_fixture: found by name by test_registry_contracts) --

LFW_73 = [
    "Male", "Asian", "White", "Black", "Baby", "Child", "Youth", "Middle Aged", "Senior", "Black Hair",
    "Blond Hair", "Brown Hair", "Bald", "No Eyewear", "Eyeglasses", "Sunglasses", "Mustache", "Smiling",
    "Frowning", "Chubby", "Blurry", "Harsh Lighting", "Flash", "Soft Lighting", "Outdoor", "Curly Hair",
    "Wavy Hair", "Straight Hair", "Receding Hairline", "Bangs", "Sideburns", "Fully Visible Forehead",
    "Partially Visible Forehead", "Obstructed Forehead", "Bushy Eyebrows", "Arched Eyebrows", "Narrow Eyes",
    "Eyes Open", "Big Nose", "Pointy Nose", "Big Lips", "Mouth Closed", "Mouth Slightly Open", "Mouth Wide Open",
    "Teeth Not Visible", "No Beard", "Goatee", "Round Jaw", "Double Chin", "Wearing Hat", "Oval Face",
    "Square Face", "Round Face", "Color Photo", "Posed Photo", "Attractive Man", "Attractive Woman", "Indian",
    "Gray Hair", "Bags Under Eyes", "Heavy Makeup", "Rosy Cheeks", "Shiny Skin", "Pale Skin",
    "5 o' Clock Shadow", "Strong Nose-Mouth Lines", "Wearing Lipstick", "Flushed Face", "High Cheekbones",
    "Brown Eyes", "Wearing Earrings", "Wearing Necktie", "Wearing Necklace",
]
MAT_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def _mat73(path: Path, cells: dict[str, list[str]], doubles: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header, cell arrays of
    strings as object references into ``#refs#`` (uint16 characters), matrices transposed."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = itertools.count()
        for key, strings in cells.items():
            ref_list = []
            for text in strings:
                chars = np.array([[ord(c)] for c in text], dtype=np.uint16)  # MATLAB 1 x L char, transposed
                ds = refs.create_dataset(f"r{next(counter)}", data=chars)
                ds.attrs["MATLAB_class"] = np.bytes_(b"char")
                ds.attrs["MATLAB_int_decode"] = np.int32(2)
                ref_list.append(ds.ref)
            # a MATLAB N x 1 cell is stored (as h5py reads it) 1 x N; AttrName is 1 x K -> K x 1
            shape = (len(ref_list), 1) if key == "AttrName" else (1, len(ref_list))
            cell = f.create_dataset(key, shape=shape, dtype=h5py.ref_dtype)
            cell[...] = np.array(ref_list, dtype=object).reshape(shape)
            cell.attrs["MATLAB_class"] = np.bytes_(b"cell")
        for key, matrix in doubles.items():
            ds = f.create_dataset(key, data=np.asarray(matrix, dtype=np.float64).T)  # column-major: transposed
            ds.attrs["MATLAB_class"] = np.bytes_(b"double")
    with open(path, "r+b") as fh:
        fh.write(MAT_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def write_lfwa(root: Path, *, people: int = 20, per_person: int = 3, seed: int = 3) -> dict[str, Any]:
    """LFWA+: ``lfw/<Person>/<Person>_NNNN.jpg`` (250 x 250), ``lfw_att_73.mat``, ``lfw_att_40.mat`` and
    ``indices_train_test.mat`` (1-based, identity-disjoint train / test), names with backslashes.

    Row 0 of the second-to-last person has two race flags and the last person none: those rows
    have no race group. Person p has race p % 4 and gender (p // 4) % 2, so persons 8-15 (test)
    repeat the groups of persons 0-7 (train): every race x gender group is in both splits, as
    the loader requires."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names, person_of = [], []
    for p in range(people):
        person = f"Person_{chr(65 + p)}{'abcdefghij'[p % 10]}"
        for k in range(1, per_person + 1):
            names.append(f"{person}\\{person}_{k:04d}.jpg")
            person_of.append(p)
    n = len(names)
    att73 = (rng.random((n, len(LFW_73))) < 0.3).astype(np.float64)
    races = ["Asian", "White", "Black", "Indian"]
    race_cols = [LFW_73.index(r) for r in races]
    att73[:, race_cols] = 0
    expected_race = []
    for i, p in enumerate(person_of):
        if p == people - 2 and i % per_person == 0:
            att73[i, race_cols[:2]] = 1
            expected_race.append(UNDEFINED_RACE)
        elif p == people - 1:
            expected_race.append(UNDEFINED_RACE)
        else:
            att73[i, race_cols[p % 4]] = 1
            expected_race.append(races[p % 4])
    att73[:, LFW_73.index("Male")] = [(p // 4) % 2 == 0 for p in person_of]
    att40 = (rng.random((n, 40)) < 0.4).astype(np.float64)
    att40[:, vocab.CELEBA_ATTRIBUTES.index("Male")] = att73[:, LFW_73.index("Male")]
    test_people = {p for p in range(people) if 8 <= p < 16} | {people - 1}
    train_idx = [i + 1 for i, p in enumerate(person_of) if p not in test_people]
    test_idx = [i + 1 for i, p in enumerate(person_of) if p in test_people]
    _mat73(root / "lfw_att_73.mat", {"AttrName": LFW_73, "name": names}, {"label": att73})
    _mat73(root / "lfw_att_40.mat", {"AttrName": vocab.CELEBA_ATTRIBUTES, "name": names}, {"label": att40})
    _mat73(root / "indices_train_test.mat", {}, {
        "indices_img_train": np.array(train_idx, dtype=float)[:, None],
        "indices_img_test": np.array(test_idx, dtype=float)[:, None],
        "indices_identity_train": np.array(sorted({person_of[i - 1] + 1 for i in train_idx}), dtype=float)[:, None],
        "indices_identity_test": np.array(sorted({person_of[i - 1] + 1 for i in test_idx}), dtype=float)[:, None],
    })
    paths = [root / "lfw" / Path(*name.split("\\")) for name in names]
    write_jpegs(paths, (250, 250), seed)
    return {"names": names, "att73": att73, "att40": att40, "race": expected_race,
            "train": train_idx, "test": test_idx, "paths": paths}


def write_fixture(root: Path) -> DatasetFixture:
    write_lfwa(root)
    return DatasetFixture()


# -- tests ------------------------------------------------------------------------------------------

TASK = Task("gender", ("race", "gender"))


def load(root, cache, task=TASK, **options):
    return LFWA(root, LFWAOptions(**options), cache).load(task, 32)


@pytest.fixture
def lfwa(tmp_path):
    return write_lfwa(tmp_path / "lfwa")


def test_fixture_is_matlab_v73_as_h5py_reads_it(lfwa, tmp_path):
    path = tmp_path / "lfwa" / "lfw_att_73.mat"
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path, "r") as f:
        assert {"#refs#", "AttrName", "name", "label"} <= set(f.keys())
        assert f["label"].shape == (73, len(lfwa["names"]))  # transposed
        assert f["name"].shape == (1, len(lfwa["names"]))
    attrs, names, labels = read_attribute_file(path)
    assert attrs == LFW_73 and names == lfwa["names"] and "\\" in names[0]
    np.testing.assert_array_equal(labels, lfwa["att73"])


def test_conversion_to_the_manifest(lfwa, tmp_path):
    table, report = convert(tmp_path / "lfwa")
    assert table["path"].iloc[0] == "lfw/Person_Aa/Person_Aa_0001.jpg"
    assert all((tmp_path / "lfwa" / p).is_file() for p in table["path"])
    order = [lfwa["names"].index(p.split("/", 1)[1].replace("/", "\\")) for p in table["path"]]
    assert list(table["race"]) == [lfwa["race"][i] for i in order]
    male = LFW_73.index("Male")
    assert list(table["gender"]) == ["Male" if lfwa["att73"][i, male] else "Female" for i in order]
    smiling = vocab.CELEBA_ATTRIBUTES.index("Smiling")  # the 40-attribute file's values win for its names
    assert list(table["Smiling"]) == [str(int(lfwa["att40"][i, smiling])) for i in order]
    assert "Middle Aged" in table.columns  # 73-file attributes not among the 40
    split = dict(zip(table["path"], table["split"]))
    for i in lfwa["train"]:  # 1-based in the file
        assert split[table["path"].iloc[order.index(i - 1)]] == "train"
    assert (table["split"] == "test").sum() == len(lfwa["test"])
    assert report["race_several_flags"] == 1 and report["race_no_flag"] == 3
    assert set(table["identity"]) == {n.split("\\")[0] for n in lfwa["names"]}


def test_loader_converts_once_into_the_cache_and_reports_undefined_race(lfwa, tmp_path):
    b = load(tmp_path / "lfwa", tmp_path / "c")
    manifests = list((tmp_path / "c").glob("lfwa-manifest-*.csv"))
    assert len(manifests) == 1 and not list((tmp_path / "lfwa").glob("*.csv"))  # never written into the data
    assert b.info["race_undefined"]["count"] == 4 and b.info["conversion"]["race_no_flag"] == 3
    assert "Undefined|Male" in b.group_names or "Undefined|Female" in b.group_names
    assert set(g.split("|")[0] for g in b.group_names) <= {*vocab.RACE4, UNDEFINED_RACE}
    test_ids = set(b.splits["test"].sample_ids)
    assert len(test_ids) == len(lfwa["test"])
    assert set(b.splits["val"].sample_ids).isdisjoint(test_ids) and len(b.splits["val"]) > 0
    mtime = manifests[0].stat().st_mtime_ns
    load(tmp_path / "lfwa", tmp_path / "c")
    assert manifests[0].stat().st_mtime_ns == mtime
    dropped = load(tmp_path / "lfwa", tmp_path / "c", race_undefined="drop")
    assert dropped.info["race_undefined"]["dropped"] == 4
    assert not any(g.startswith("Undefined") for g in dropped.group_names)


def test_attribute_targets(lfwa, tmp_path):
    b = load(tmp_path / "lfwa", tmp_path / "c", task=Task("Smiling", ("gender",)))
    assert b.classes == ["no", "yes"]
    race = load(tmp_path / "lfwa", tmp_path / "c", task=Task("race", ("gender",)))
    assert race.classes == [*vocab.RACE4, "Undefined"]
    with pytest.raises(DatasetError, match="no target 'Dimples'"):
        load(tmp_path / "lfwa", tmp_path / "c", task=Task("Dimples", ("gender",)))


def test_an_image_named_by_a_train_row_and_a_test_row_is_an_error(lfwa, tmp_path):
    """Two rows of the attribute files naming one image, one row in the train indices and one in
    the test indices: the image would be trained on and then scored as a test image."""
    root = tmp_path / "lfwa"
    names = list(lfwa["names"])
    train_row, test_row = lfwa["train"][0] - 1, lfwa["test"][0] - 1
    names[test_row] = names[train_row]
    _mat73(root / "lfw_att_73.mat", {"AttrName": LFW_73, "name": names}, {"label": lfwa["att73"]})
    _mat73(root / "lfw_att_40.mat", {"AttrName": vocab.CELEBA_ATTRIBUTES, "name": names}, {"label": lfwa["att40"]})
    duplicated = "lfw/" + names[train_row].replace("\\", "/")
    with pytest.raises(DatasetError, match=rf"^lfwa: {duplicated} is in the '(train|val)' split \(.*\) and in the "
                       r"'test' split \(.*\): it would be trained on and then scored as a held-out image"):
        load(root, tmp_path / "c")


def test_bad_files(lfwa, tmp_path, monkeypatch):
    root = tmp_path / "lfwa"
    n = len(lfwa["names"])
    _mat73(root / "indices_train_test.mat", {}, {"indices_img_train": np.arange(0, 5, dtype=float)[:, None],
                                                  "indices_img_test": np.arange(5, n, dtype=float)[:, None]})
    with pytest.raises(DatasetError, match="1-based"):
        convert(root)
    (root / "lfw_att_73.mat").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="MATLAB v7.3"):
        convert(root)
    (root / "lfw_att_73.mat").unlink()
    monkeypatch.delenv("FAIRBENCH_LFWA_ROOT", raising=False)
    with pytest.raises(DatasetError) as err:
        load(root, tmp_path / "c")
    assert "missing lfw_att_73.mat" in str(err.value) and "FAIRBENCH_LFWA_ROOT" in str(err.value)


def test_command_line_converter(lfwa, tmp_path, capsys):
    out = tmp_path / "lfwa.csv"
    assert main([str(tmp_path / "lfwa"), str(out)]) == 0
    assert out.read_text().startswith("path,split,identity,gender,race,")
    assert "--dataset manifest" in capsys.readouterr().out
