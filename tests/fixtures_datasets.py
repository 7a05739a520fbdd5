"""Miniature copies of the real face datasets, written in their exact official layouts.

Every builder writes into a folder the test owns (``tmp_path``), with the official file
names, label files and formats of docs/specs-notes.md, "Datasets"; the images are small
synthetic faces (SynthFace renderings) saved as JPEGs at each dataset's native size.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fairbench.data import vocab

# -- images -------------------------------------------------------------------------------------------


def face_images(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` face-like RGB images of ``size`` = (width, height)."""
    try:
        from fairbench.data.synthface import SynthFaceOptions, render_all, sample_split

        lat = sample_split("train", max(n, 1), "smiling", SynthFaceOptions(seed=seed))
        small = render_all(lat, 64)[:n]
    except ImportError:  # the synthetic renderer is optional for these fixtures
        small = np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    return [np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in small]


def write_jpegs(paths: list[Path], size: tuple[int, int], seed: int = 0) -> None:
    for path, pixels in zip(paths, face_images(len(paths), size, seed)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, "JPEG", quality=90)


def truncate_file(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt_file(path: Path) -> None:
    path.write_bytes(b"this is not an image" * 20)


# -- FairFace -----------------------------------------------------------------------------------------

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
    groups = list(itertools.product(vocab.RACE7, ["Male", "Female"]))
    ages = itertools.cycle(vocab.FAIRFACE_AGES)
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


# -- UTKFace ------------------------------------------------------------------------------------------

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
                labels[name] = {"age": age, "gender": ["Male", "Female"][gender], "race": vocab.UTK_RACES[race]}
                i += 1
    bad = UTKFACE_MALFORMED if malformed else []
    write_jpegs([folder / n for n in names + bad], (200, 200), seed)
    return {"folder": folder, "labels": labels, "malformed": bad}


# -- CelebA ---------------------------------------------------------------------------------------------


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


# -- LFWA+ ---------------------------------------------------------------------------------------------

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
            expected_race.append(vocab.LFWA_UNDEFINED_RACE)
        elif p == people - 1:
            expected_race.append(vocab.LFWA_UNDEFINED_RACE)
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


# -- generic manifest -----------------------------------------------------------------------------------


def write_manifest(root: Path, *, n: int = 24, split_column: bool = True, escaping: str | None = None,
                   fmt: str = "csv", gender_values: tuple[str, str] = ("Male", "Female"), seed: int = 4) -> Path:
    """``root/manifest.csv`` (or .parquet): path, split, identity, gender, race, smiling; images in ``root/img``.

    ``escaping`` adds one row whose path leaves the root (e.g. ``../outside.jpg``)."""
    import pandas as pd

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
