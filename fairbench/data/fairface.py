"""FairFace (Kärkkäinen & Joo, WACV 2021; CC BY 4.0): the paper's gender task over 7 races.

Reads the official label CSVs and image folders (margin 0.25 or 1.25; the image root may differ
from the CSV folder). FairFace has no public test split: test = the official val, val = a
fixed-seed share of the official train stratified by race x gender. ``race_view = "race4"`` gives
the race-4 view shared with UTKFace / LFWA+; spreadsheet-damaged values are normalised with one
notice, any other unknown value is an error naming the file and line.
Files, image root, protocol and the normalised forms: docs/real-datasets.md#fairface
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fairbench.data import splitting, vocab
from fairbench.data.base import SPLITS, DataNotice, DatasetError, Task
from fairbench.data.face import FaceDataset, OnBadImage, SplitSeed, ValFraction, strata
from fairbench.data.label_text import label_lines, read_label_text
from fairbench.data.sources import Source, locate, safe_relative
from fairbench.registry import register_dataset

RACE7 = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
#: race-7 -> the race-4 view shared with UTKFace / LFWA+; Latino_Hispanic has no race-4 group (None)
RACE7_TO_RACE4: dict[str, str | None] = {
    "White": "White",
    "Middle Eastern": "White",
    "Black": "Black",
    "East Asian": "Asian",
    "Southeast Asian": "Asian",
    "Indian": "Indian",
    "Latino_Hispanic": None,
}
AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
HEADER = ["file", "age", "gender", "race", "service_test"]
AGE_FIXES = {"9-Mar": "3-9", "03-Sep": "3-9", "19-Oct": "10-19", "Oct-19": "10-19"}
BOOL_FIXES = {"TRUE": "True", "FALSE": "False"}
IMAGE_FOLDERS = ("fairface-img-margin025-trainval", "fairface-img-margin125-trainval")
SOURCE = Source(
    "fairface", "FAIRBENCH_FAIRFACE_ROOT",
    required=[("fairface_label_train.csv", "fairface_label_val.csv")],
    get_from=("https://github.com/joojs/fairface (the two label CSVs and fairface-img-margin025-trainval.zip "
              "or fairface-img-margin125-trainval.zip, unzipped beside them)"),
)


class SpreadsheetNotice(DataNotice):
    """A label file had spreadsheet-damaged values of a known form, which were normalised."""


class FairFaceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    race_view: Literal["race7", "race4"] = Field("race7", description="race7, or race4 (shared with UTKFace / LFWA+)")
    val_fraction: ValFraction = 0.1
    split_seed: SplitSeed = 0
    images_root: str | None = Field(None, description="folder holding train/ and val/ (default: found beside the CSVs)")
    on_bad_image: OnBadImage = "error"


def read_labels(path: Path, images_root: Path, fixes: Counter) -> pd.DataFrame:
    """One official label CSV as a table (path, age, gender, race, service_test, source)."""
    rows = []
    seen: dict[str, int] = {}
    with label_lines(read_label_text(path, "fairface")) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise DatasetError(f"fairface: {path} line 1: header {header} is not the official {','.join(HEADER)}")
        for record in reader:
            line = reader.line_num
            where = f"{path.name} line {line}"
            if not record or all(not v.strip() for v in record):
                continue
            if len(record) != len(HEADER):
                raise DatasetError(f"fairface: {path} line {line}: {len(record)} fields, expected {len(HEADER)} ({record})")
            file, age, gender, race, service = (v.strip() for v in record)
            if age in AGE_FIXES:
                fixes[f"age {age!r} -> {AGE_FIXES[age]!r}"] += 1
                age = AGE_FIXES[age]
            if service in BOOL_FIXES:
                fixes[f"service_test {service!r} -> {BOOL_FIXES[service]!r}"] += 1
                service = BOOL_FIXES[service]
            for column, value, allowed in (("age", age, AGES), ("gender", gender, vocab.GENDER_CLASSES),
                                           ("race", race, RACE7), ("service_test", service, ["True", "False"])):
                if value not in allowed:
                    raise DatasetError(f"fairface: {path} line {line}: unknown {column} {value!r}; "
                                       f"expected one of {allowed}")
            rel = safe_relative(file, images_root, f"fairface: {path} line {line}")
            if rel in seen:
                raise DatasetError(f"fairface: {path} line {line}: {rel} is listed twice (also line {seen[rel]})")
            seen[rel] = line
            rows.append((rel, age, gender, race, service, where))
    if not rows:
        raise DatasetError(f"fairface: {path} has no label rows")
    return pd.DataFrame(rows, columns=["path", "age", "gender", "race7", "service_test", "source"])


@register_dataset("fairface")
class FairFace(FaceDataset):
    summary = "FairFace: gender ~ race (7) x gender; test = official val, val = 10% of train per group (CC BY 4.0)"
    Options = FairFaceOptions
    race_order = [*RACE7, "Asian"]  # the race-4 view's Asian after the race-7 groups

    def target_classes(self) -> dict[str, list[str]]:
        race = RACE7 if self.options.race_view == "race7" else vocab.RACE4  # type: ignore[attr-defined]
        return {"gender": vocab.GENDER_CLASSES, "race": race, "age": AGES}

    def value_order(self) -> dict[str, list[str]]:
        return {**super().value_order(), "age": AGES}

    def _images_root(self, label_root: Path) -> Path:
        opts: FairFaceOptions = self.options  # type: ignore[assignment]
        if opts.images_root:
            root = Path(opts.images_root).expanduser()
            root = root if root.is_absolute() else label_root / root
            if not root.is_dir():
                raise DatasetError(f"fairface: images_root {root} is not a folder; it should hold train/ and val/ "
                                   "from fairface-img-margin025-trainval.zip")
            return root
        if (label_root / "train").is_dir() or (label_root / "val").is_dir():
            return label_root
        found = [label_root / f for f in IMAGE_FOLDERS if (label_root / f).is_dir()]
        if len(found) > 1:
            raise DatasetError(f"fairface: both {found[0].name}/ and {found[1].name}/ are in {label_root}; the margin "
                               "changes the results, so choose one: --set data.options.images_root=" + found[0].name)
        if found:
            return found[0]
        raise DatasetError(
            f"fairface: found the label CSVs in {label_root} but no images: expected train/ and val/ there, or in "
            f"{' or '.join(f + '/' for f in IMAGE_FOLDERS)} beside them. Unzip fairface-img-margin025-trainval.zip "
            "(https://github.com/joojs/fairface) there, or name the folder with "
            "--set data.options.images_root=/path/to/images")

    def label_table(self, task: Task) -> tuple[pd.DataFrame, Path, dict[str, Any]]:
        opts: FairFaceOptions = self.options  # type: ignore[assignment]
        label_root, _ = locate(SOURCE, self.root)
        images_root = self._images_root(label_root)
        fixes: Counter = Counter()
        train = read_labels(label_root / "fairface_label_train.csv", images_root, fixes)
        test = read_labels(label_root / "fairface_label_val.csv", images_root, fixes)
        if fixes:
            summary = ", ".join(f"{k} ({n}x)" for k, n in sorted(fixes.items()))
            warnings.warn(SpreadsheetNotice(f"fairface: normalised spreadsheet-damaged values in the label CSVs: {summary}"),
                          stacklevel=3)
        train["split"] = splitting.stratified_split(strata(train, ("race7", "gender")), {"val": opts.val_fraction},
                                                    opts.split_seed)
        test["split"] = "test"
        table = pd.concat([train, test], ignore_index=True)
        dropped = {}
        if opts.race_view == "race4":
            table["race"] = table["race7"].map(RACE7_TO_RACE4)
            excluded = table["race"].isna()
            dropped = table.loc[excluded, "split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict()
            table = table[~excluded].reset_index(drop=True)
        else:
            table["race"] = table["race7"]
        info = {
            "protocol": ("test = official val (fairface_label_val.csv); "
                         + splitting.describe({"val": opts.val_fraction}, opts.split_seed, "race (7) x gender",
                                              "the official train")
                         + "; train = the rest of the official train"),
            "label_root": str(label_root),
            "images_root": str(images_root),
            "race_view": opts.race_view,
            "on_bad_image": opts.on_bad_image,
        }
        if opts.race_view == "race4":
            info["race4_mapping"] = {k: v for k, v in RACE7_TO_RACE4.items()}
            info["excluded_latino_hispanic"] = {k: int(v) for k, v in dropped.items()}
        if fixes:
            info["normalised_spreadsheet_values"] = dict(fixes)
        return table, images_root, info
