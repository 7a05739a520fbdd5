"""CelebA (Liu et al., ICCV 2015; non-commercial research use): 40 binary face attributes.

Reads the official files (or the Kaggle variant) and the official partition. Target: any of the
40 attributes, default ``Smiling``, one of the 13 gender-independent attributes of the paper's
attribute experiments (:data:`GENDER_INDEPENDENT`); protected: ``Male``. The gender task is
``--target Male``, which is also what a FairFace gender model is evaluated on.
Files, layouts and defaults: docs/real-datasets.md#celeba
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from fairbench.data import vocab
from fairbench.data.base import DatasetError, Task
from fairbench.data.face import FaceDataset, OnBadImage
from fairbench.data.image_table import in_two_splits
from fairbench.data.label_text import label_lines, read_label_text
from fairbench.data.sources import Source, locate
from fairbench.registry import register_dataset

SOURCE = Source(
    "celeba", "FAIRBENCH_CELEBA_ROOT",
    required=[("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba/"),
              ("list_attr_celeba.csv", "list_eval_partition.csv", "img_align_celeba/")],
    get_from=("https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (img_align_celeba.zip, Anno/list_attr_celeba.txt, "
              "Eval/list_eval_partition.txt), or the Kaggle 'celeba-dataset' copy"),
    layouts=("", "celeba"),
)
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
#: the 13 gender-independent attributes of the paper's attribute experiments
GENDER_INDEPENDENT = [
    "Bags_Under_Eyes", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Chubby", "Eyeglasses", "Gray_Hair",
    "High_Cheekbones", "Mouth_Slightly_Open", "Narrow_Eyes", "Smiling", "Wearing_Hat",
]


class CelebAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_bad_image: OnBadImage = "error"


def _check_values(path: Path, files: list[str], values: np.ndarray, names: list[str], first_line: int) -> np.ndarray:
    ok = np.isin(values, ["1", "-1"])
    if not ok.all():
        r, c = (int(v[0]) for v in np.nonzero(~ok))
        raise DatasetError(f"celeba: {path} line {first_line + r} ({files[r]}): {names[c]} = {str(values[r, c])!r}; "
                           "attribute values must be 1 or -1")
    return values.astype(np.int8)


def read_attributes_txt(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, values N x 40 in {1, -1}) of ``list_attr_celeba.txt``."""
    lines = read_label_text(path, "celeba").splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DatasetError(f"celeba: {path} line 1 should be the number of images, found {lines[0] if lines else ''!r}")
    count = int(lines[0])
    names = lines[1].split()
    if len(names) != len(set(names)) or "Male" not in names:
        raise DatasetError(f"celeba: {path} line 2 should list the 40 attribute names (with Male), found {names}")
    files, values = [], []
    for line_no, text in enumerate(lines[2:], start=3):
        tokens = text.split()  # irregular spacing: any run of whitespace separates
        if not tokens:
            continue
        if len(tokens) != len(names) + 1:
            raise DatasetError(f"celeba: {path} line {line_no}: {len(tokens)} fields, expected a file name and "
                               f"{len(names)} values")
        files.append(tokens[0])
        values.append(tokens[1:])
    if len(files) != count:
        raise DatasetError(f"celeba: {path} says {count} images on line 1 but lists {len(files)} (truncated download?)")
    matrix = np.array(values, dtype=str).reshape(len(files), len(names))
    return names, files, _check_values(path, files, matrix, names, 3)


def read_attributes_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    frame = pd.read_csv(label_lines(read_label_text(path, "celeba")), dtype=str, skipinitialspace=True)
    if frame.columns[0] != "image_id" or "Male" not in frame.columns:
        raise DatasetError(f"celeba: {path} line 1: expected the header image_id,<40 attribute names>, "
                           f"found {list(frame.columns)[:5]}...")
    names = list(frame.columns[1:])
    files = frame["image_id"].str.strip().tolist()
    values = frame[names].fillna("").apply(lambda col: col.str.strip()).to_numpy(dtype=str)
    return names, files, _check_values(path, files, values, names, 2)


def read_partition(path: Path) -> dict[str, str]:
    """file name -> train / val / test."""
    out: dict[str, tuple[str, int]] = {}  # file -> (split, line)
    if path.suffix == ".csv":
        frame = pd.read_csv(label_lines(read_label_text(path, "celeba")), dtype=str)
        if list(frame.columns) != ["image_id", "partition"]:
            raise DatasetError(f"celeba: {path} line 1: expected the header image_id,partition, found {list(frame.columns)}")
        pairs = [(i + 2, [f, p]) for i, (f, p) in enumerate(zip(frame["image_id"], frame["partition"]))]
    else:
        pairs = [(i + 1, line.split()) for i, line in enumerate(read_label_text(path, "celeba").splitlines())]
    for line_no, tokens in pairs:
        if not tokens:
            continue
        if len(tokens) != 2 or str(tokens[1]).strip() not in PARTITIONS:
            raise DatasetError(f"celeba: {path} line {line_no}: expected '<file> 0|1|2', found {' '.join(map(str, tokens))!r}")
        file, split = str(tokens[0]).strip(), PARTITIONS[str(tokens[1]).strip()]
        if file in out and out[file][0] != split:  # else the last line would win, silently
            raise in_two_splits("celeba", file, (out[file][0], f"{path.name} line {out[file][1]}"),
                                (split, f"{path.name} line {line_no}"))
        out.setdefault(file, (split, line_no))
    return {file: split for file, (split, _) in out.items()}


def attribute_values(name: str, column: np.ndarray) -> np.ndarray:
    """1 / -1 as class names: Male -> Male / Female, any other attribute -> yes / no."""
    if name == "Male":
        return np.where(column == 1, "Male", "Female").astype(object)
    return np.where(column == 1, "yes", "no").astype(object)


@register_dataset("celeba")
class CelebA(FaceDataset):
    summary = "CelebA: 40 attributes (default Smiling) ~ gender (Male); official partition (research use)"
    Options = CelebAOptions
    default_target = "Smiling"
    default_protected = ("Male",)
    target_concepts = {"gender": "Male"}

    def target_classes(self) -> dict[str, list[str]]:
        return {a: vocab.GENDER_CLASSES if a == "Male" else vocab.BINARY_CLASSES for a in vocab.CELEBA_ATTRIBUTES}

    def classes_of(self, task: Task) -> list[str]:
        """Any attribute of the file (``label_table`` checks it is there): Male, or no / yes."""
        return list(vocab.GENDER_CLASSES if task.target == "Male" else vocab.BINARY_CLASSES)

    def value_order(self) -> dict[str, list[str]]:
        return {"Male": vocab.GENDER_ORDER}

    def label_table(self, task: Task) -> tuple[pd.DataFrame, Path, dict[str, Any]]:
        opts: CelebAOptions = self.options  # type: ignore[assignment]
        folder, variant = locate(SOURCE, self.root)
        if variant == 0:
            attr_file, part_file = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
            names, files, values = read_attributes_txt(attr_file)
        else:
            attr_file, part_file = folder / "list_attr_celeba.csv", folder / "list_eval_partition.csv"
            names, files, values = read_attributes_csv(attr_file)
        for col in (task.target, *task.protected):
            if col not in names:
                raise DatasetError(f"celeba: no attribute {col!r} in {attr_file}; attributes: {', '.join(names)}")
        partition = read_partition(part_file)
        no_split = [f for f in files if f not in partition]
        if no_split:
            raise DatasetError(f"celeba: {len(no_split)} images of {attr_file.name} have no partition in "
                               f"{part_file.name}, e.g. {no_split[0]}")
        images = folder / "img_align_celeba"
        if files and not (images / files[0]).exists() and (images / "img_align_celeba" / files[0]).exists():
            images = images / "img_align_celeba"  # the Kaggle archive nests the folder
        first_line = 3 if variant == 0 else 2
        table = pd.DataFrame({
            "path": files,
            "split": [partition[f] for f in files],
            "source": [f"{attr_file.name} line {first_line + i}" for i in range(len(files))],
        })
        for col in dict.fromkeys((task.target, *task.protected)):
            table[col] = attribute_values(col, values[:, names.index(col)])
        classes = self.classes_of(task)
        info = {
            "protocol": "official partition (list_eval_partition: 0 train, 1 val, 2 test)",
            "variant": "official txt" if variant == 0 else "Kaggle csv",
            "folder": str(folder),
            "images": str(images),
            "target_values": "1 -> " + classes[1] + ", -1 -> " + classes[0],
            "on_bad_image": opts.on_bad_image,
        }
        return table, images, info
