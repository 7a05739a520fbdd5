"""LFWA+: MATLAB v7.3 (HDF5) files converted to the generic manifest, then loaded."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fairbench.data import vocab
from fairbench.data.base import DatasetError, Task
from fairbench.data.lfwa import LFWA, LFWAOptions, convert, main, read_attribute_file

from .fixtures_datasets import LFW_73, _mat73, write_lfwa

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
    assert set(g.split("|")[0] for g in b.group_names) <= {*vocab.RACE4, vocab.LFWA_UNDEFINED_RACE}
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
