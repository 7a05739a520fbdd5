"""CelebA: official txt files (irregular spacing), torchvision and Kaggle layouts, official partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fairbench.data import vocab
from fairbench.data.base import DatasetError, Task
from fairbench.data.celeba import GENDER_INDEPENDENT, CelebA, CelebAOptions, read_attributes_txt, read_partition

from tests.kit import DatasetFixture, truncate_file, write_jpegs


# -- the miniature copy, official layout (write_fixture: found by name by test_registry_contracts) --

def _celeba_values(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.where(rng.random((n, 40)) < 0.4, 1, -1)
    values[:, vocab.CELEBA_ATTRIBUTES.index("Male")] = np.where(np.arange(n) % 2 == 0, 1, -1)
    return values


def write_celeba(root: Path, *, n: int = 24, layout: str = "official", seed: int = 2) -> dict[str, Any]:
    """CelebA: ``official`` (files in root), ``torchvision`` (in root/celeba) or ``kaggle`` (CSVs).

    The txt files have the official irregular spacing: a count line, the 40 names with a
    trailing space, then ``000001.jpg -1  1 ...`` (values right-aligned in 2 columns)."""
    folder = root / "celeba" if layout == "torchvision" else root
    folder.mkdir(parents=True, exist_ok=True)
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    values = _celeba_values(n, seed)
    partition = [0 if i < n * 0.6 else 1 if i < n * 0.8 else 2 for i in range(n)]
    identity = [1 + i // 3 for i in range(n)]
    if layout == "kaggle":
        images = folder / "img_align_celeba" / "img_align_celeba"
        (folder / "list_attr_celeba.csv").write_text(
            "image_id," + ",".join(vocab.CELEBA_ATTRIBUTES) + "\n"
            + "".join(f + "," + ",".join(str(v) for v in row) + "\n" for f, row in zip(files, values)))
        (folder / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{f},{p}\n" for f, p in zip(files, partition)))
        (folder / "list_bbox_celeba.csv").write_text(
            "image_id,x_1,y_1,width,height\n" + "".join(f"{f},95,71,226,313\n" for f in files))
        (folder / "list_landmarks_align_celeba.csv").write_text(
            "image_id,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,leftmouth_x,leftmouth_y,"
            "rightmouth_x,rightmouth_y\n" + "".join(f"{f},69,109,106,113,77,142,73,152,108,154\n" for f in files))
    else:
        images = folder / "img_align_celeba"
        (folder / "list_attr_celeba.txt").write_text(
            f"{n}\n" + " ".join(vocab.CELEBA_ATTRIBUTES) + " \n"
            + "".join(f + "".join(f" {v:>2}" for v in row) + "\n" for f, row in zip(files, values)))
        (folder / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, partition)))
        (folder / "identity_CelebA.txt").write_text("".join(f"{f} {k}\n" for f, k in zip(files, identity)))
        (folder / "list_bbox_celeba.txt").write_text(
            f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{f}    95  71 226 313\n" for f in files))
        (folder / "list_landmarks_align_celeba.txt").write_text(
            f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
            "rightmouth_y\n" + "".join(f"{f} 69  109  106  113   77  142   73  152  108  154\n" for f in files))
    write_jpegs([images / f for f in files], (178, 218), seed)
    return {"folder": folder, "images": images, "files": files, "values": values, "partition": partition}


def write_fixture(root: Path) -> DatasetFixture:
    write_celeba(root)
    return DatasetFixture()


# -- tests ------------------------------------------------------------------------------------------

SPLIT_NAMES = {"train": 0, "val": 1, "test": 2}


def load(root, cache, task=Task("Smiling", ("Male",)), **options):
    return CelebA(root, CelebAOptions(**options), cache).load(task, 32)


def check_against_fixture(bundle, fixture, target):
    col = vocab.CELEBA_ATTRIBUTES.index(target)
    male = vocab.CELEBA_ATTRIBUTES.index("Male")
    for split, code in SPLIT_NAMES.items():
        expected = [f for f, p in zip(fixture["files"], fixture["partition"]) if p == code]
        data = bundle.splits[split]
        assert list(data.sample_ids) == expected
        rows = [fixture["files"].index(f) for f in expected]
        np.testing.assert_array_equal(data.targets, (fixture["values"][rows, col] == 1).astype(int))
        assert list(data.attributes["Male"]) == ["Male" if fixture["values"][r, male] == 1 else "Female" for r in rows]


@pytest.mark.parametrize("layout", ["official", "torchvision", "kaggle"])
def test_each_layout_loads_with_the_official_partition(tmp_path, layout):
    fixture = write_celeba(tmp_path / "celeba-root", layout=layout)
    b = load(tmp_path / "celeba-root", tmp_path / "c")
    assert b.classes == ["no", "yes"] and b.group_names == ["Male", "Female"]
    assert b.info["variant"] == ("Kaggle csv" if layout == "kaggle" else "official txt")
    check_against_fixture(b, fixture, "Smiling")


def test_irregular_spacing_is_in_the_fixture_and_parsed(tmp_path):
    fixture = write_celeba(tmp_path / "r")
    lines = (tmp_path / "r" / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[1].endswith(" ") and "  1" in lines[2]  # trailing space, two-space runs
    lines[3] = lines[3].replace(" ", "\t ", 3)  # tabs and runs of spaces: any whitespace separates
    (tmp_path / "r" / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    names, files, values = read_attributes_txt(tmp_path / "r" / "list_attr_celeba.txt")
    assert names == vocab.CELEBA_ATTRIBUTES and files == fixture["files"]
    np.testing.assert_array_equal(values, fixture["values"])


def test_gender_task_and_every_attribute_as_target(tmp_path):
    fixture = write_celeba(tmp_path / "r")
    gender = load(tmp_path / "r", tmp_path / "c", task=Task("Male", ("Male",)))
    assert gender.classes == ["Female", "Male"]
    check_against_fixture(gender, fixture, "Male")
    assert load(tmp_path / "r", tmp_path / "c").task.target == CelebA.default_target == "Smiling"
    assert set(GENDER_INDEPENDENT) <= set(CelebA(None).targets())
    hat = load(tmp_path / "r", tmp_path / "c", task=Task("Wearing_Hat", ("Male",)))
    check_against_fixture(hat, fixture, "Wearing_Hat")
    with pytest.raises(DatasetError, match="no attribute 'Smile'.*attributes: 5_o_Clock_Shadow"):
        load(tmp_path / "r", tmp_path / "c", task=Task("Smile", ("Male",)))


def test_torchvision_reads_the_same_attributes_and_splits(tmp_path):
    """torchvision's CelebA checks the md5 of the real files, which a fixture cannot match: this
    subclass skips only that check and leaves its parsing (``_load_csv``) and split selection as is."""
    import torch
    from torchvision.datasets import CelebA as TorchvisionCelebA

    class Unverified(TorchvisionCelebA):
        def _check_integrity(self) -> bool:
            return True

    fixture = write_celeba(tmp_path / "root", layout="torchvision")
    names, files, values = read_attributes_txt(fixture["folder"] / "list_attr_celeba.txt")
    bundle = load(tmp_path / "root", tmp_path / "c", task=Task("Smiling", ("Male",)))
    for split, tv_split in (("train", "train"), ("val", "valid"), ("test", "test")):
        tv = Unverified(str(tmp_path / "root"), split=tv_split, target_type="attr", download=False)
        ours = bundle.splits[split]
        assert list(tv.filename) == list(ours.sample_ids)
        rows = [files.index(f) for f in tv.filename]
        assert tv.attr_names[:40] == names
        np.testing.assert_array_equal(tv.attr.numpy(), (values[rows] == 1).astype(np.int64))
        np.testing.assert_array_equal(tv.attr[:, names.index("Smiling")].numpy(), ours.targets)
        assert torch.equal(tv.attr[:, names.index("Male")], torch.tensor([v == "Male" for v in ours.attributes["Male"]]).long())


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines.__setitem__(4, lines[4].replace(" 1", " 2", 1)), r"line 5 \(000003.jpg\): .* = '2'"),
    (lambda lines: lines.__setitem__(4, lines[4] + "  1"), "line 5: 42 fields"),
    (lambda lines: lines.pop(), "says 24 images on line 1 but lists 23"),
    (lambda lines: lines.__setitem__(0, "many"), "line 1 should be the number of images"),
])
def test_bad_attribute_files_name_the_line(tmp_path, edit, message):
    write_celeba(tmp_path / "r")
    path = tmp_path / "r" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        load(tmp_path / "r", tmp_path / "c")


def test_partition_problems(tmp_path):
    write_celeba(tmp_path / "r")
    path = tmp_path / "r" / "list_eval_partition.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match="1 images of list_attr_celeba.txt have no partition.*000024.jpg"):
        load(tmp_path / "r", tmp_path / "c")
    path.write_text("\n".join(lines[:-1] + ["000024.jpg 3"]) + "\n")
    with pytest.raises(DatasetError, match="line 24: expected '<file> 0\\|1\\|2'"):
        read_partition(path)


def test_a_file_in_two_partitions_is_an_error(tmp_path):
    """Read as a dict, the last line used to win: listed as train and as test, the image was in one
    split silently. Now both lines are named (and nothing is decoded)."""
    write_celeba(tmp_path / "r")
    path = tmp_path / "r" / "list_eval_partition.txt"
    path.write_text(path.read_text() + "000001.jpg 2\n")
    with pytest.raises(DatasetError, match=r"^celeba: 000001\.jpg is in the 'train' split \(list_eval_partition\.txt "
                       r"line 1\) and in the 'test' split \(list_eval_partition\.txt line 25\): it would be trained on"):
        load(tmp_path / "r", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_label_text_that_is_not_utf8_names_the_line(tmp_path):
    write_celeba(tmp_path / "r")
    path = tmp_path / "r" / "list_attr_celeba.txt"
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b".jpg", b"\xe9.jpg")  # Latin-1 e-acute
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetError, match=f"^celeba: {path} line 6: byte 0xe9 is not UTF-8 text; re-save the file as UTF-8"):
        load(tmp_path / "r", tmp_path / "c")


def test_truncated_image_and_missing_files(tmp_path, monkeypatch):
    fixture = write_celeba(tmp_path / "r")
    truncate_file(fixture["images"] / "000002.jpg")
    with pytest.raises(DatasetError, match="000002.jpg \\(list_attr_celeba.txt line 4\\)"):
        load(tmp_path / "r", tmp_path / "c")
    b = load(tmp_path / "r", tmp_path / "c", on_bad_image="skip")
    assert b.info["skipped_images"] == {"train": 1} and len(b.splits["train"]) == 14
    monkeypatch.delenv("FAIRBENCH_CELEBA_ROOT", raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        load(tmp_path / "empty", tmp_path / "c")
    text = str(err.value)
    assert f"{tmp_path / 'empty'}: missing" in text and f"{tmp_path / 'empty' / 'celeba'}: not a folder" in text
    assert "list_attr_celeba.txt" in text and "mmlab.ie.cuhk.edu.hk" in text and "FAIRBENCH_CELEBA_ROOT" in text
