"""UTKFace (Zhang, Song & Qi, CVPR 2017; non-commercial research use).

Labels live in the file names (``[age]_[gender]_[race]_[datetime].jpg.chip.jpg``), parsed with a
strict pattern: names that do not parse are skipped, never guessed, and listed in
``info["malformed_names"]`` with one warning. Vocabularies follow FairFace's race-4 view, so
cross-dataset tables line up. No official split: a fixed-seed split stratified by race x gender
(default 70 / 10 / 20 %). File names, label codes and image sets: docs/real-datasets.md#utkface
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fairbench.data import splitting, vocab
from fairbench.data.base import DataNotice, DatasetError, Task, fingerprint_box
from fairbench.data.face import FaceDataset, OnBadImage, strata
from fairbench.data.sources import Source, locate
from fairbench.registry import register_dataset

# the datetime is no label, only part of the name: up to 17 digits (the release has a 16-digit one)
ALIGNED_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<datetime>\d{1,17})\.jpg\.chip\.jpg$")
WILD_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<datetime>\d{1,17})\.jpg$")
#: malformed names quoted in the warning (all of them are in ``info["malformed_names"]``)
NAMES_IN_WARNING = 3
MAX_AGE = 116
GENDERS = {"0": "Male", "1": "Female"}
RACES = [*vocab.RACE4, "Others"]  # race codes 0..4
GET_FROM = "https://susanqq.github.io/UTKFace/ (UTKFace.tar.gz: 'Aligned&Cropped Faces'; in-the-wild part1-3)"
SOURCES = {
    "aligned": Source("utkface", "FAIRBENCH_UTKFACE_ROOT", required=[("UTKFace/",), ("*.jpg.chip.jpg",)],
                      get_from=GET_FROM),
    "in_the_wild": Source("utkface", "FAIRBENCH_UTKFACE_ROOT", required=[("part1/",), ("part2/",), ("part3/",)],
                          get_from=GET_FROM),
}


class UTKFaceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_set: Literal["aligned", "in_the_wild"] = Field("aligned", description="UTKFace/ chips, or part1-3")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share held out as val, per race x gender group")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out as test, per race x gender group")
    split_seed: int = Field(0, ge=0, description="seed of the split")
    on_bad_image: OnBadImage = "error"

    @model_validator(mode="after")
    def _fractions(self) -> "UTKFaceOptions":
        splitting.check_split_fractions(self.val_fraction, self.test_fraction)
        return self


def parse_name(name: str, pattern: re.Pattern = ALIGNED_NAME) -> dict[str, str] | None:
    """Labels of one file name, or None if it does not match the pattern exactly."""
    match = pattern.match(name)
    if match is None or int(match["age"]) > MAX_AGE:
        return None
    return {"age": str(int(match["age"])), "gender": GENDERS[match["gender"]],
            "race": RACES[int(match["race"])], "datetime": match["datetime"]}


@register_dataset("utkface")
class UTKFace(FaceDataset):
    summary = "UTKFace: gender ~ race (White/Black/Asian/Indian/Others) x gender; fixed-seed 70/10/20 split"
    Options = UTKFaceOptions
    race_order = [*vocab.RACE4_ORDER, "Others"]

    def target_classes(self) -> dict[str, list[str]]:
        return {"gender": vocab.GENDER_CLASSES, "race": RACES}

    def _folders(self) -> list[Path]:
        opts: UTKFaceOptions = self.options  # type: ignore[assignment]
        source = SOURCES[opts.image_set]
        folder, alternative = locate(source, self.root)
        if opts.image_set == "aligned":
            return [folder / "UTKFace" if alternative == 0 else folder]
        return [folder / p for p in ("part1", "part2", "part3") if (folder / p).is_dir()]

    def label_table(self, task: Task | None = None) -> tuple[pd.DataFrame, Path, dict[str, Any]]:
        """Every parsed file (``path`` relative to the image root, the labels, ``split``), the image
        root and what ``load`` records in ``info``; decodes nothing. Warns about malformed names
        (not inside ``fingerprint_only``: a run reads the labels twice, the warning is said once)."""
        opts: UTKFaceOptions = self.options  # type: ignore[assignment]
        folders = self._folders()
        base = folders[0] if opts.image_set == "aligned" else folders[0].parent
        pattern = ALIGNED_NAME if opts.image_set == "aligned" else WILD_NAME
        rows, malformed = [], []
        for folder in folders:
            for name in sorted(os.listdir(folder)):
                if name.startswith(".") or not (folder / name).is_file():
                    continue
                rel = (folder / name).relative_to(base).as_posix()
                labels = parse_name(name, pattern)
                if labels is None:
                    malformed.append(rel)
                    continue
                rows.append({"path": rel, **labels, "source": f"file name {rel}"})
        if not rows:
            raise DatasetError(f"utkface: no file in {', '.join(map(str, folders))} has a name of the form "
                               f"{pattern.pattern} ({len(malformed)} other files)")
        if malformed and fingerprint_box() is None:  # said when the images are read, not at the fingerprint
            shown = ", ".join(malformed[:NAMES_IN_WARNING]) + (
                f" and {len(malformed) - NAMES_IN_WARNING} more" if len(malformed) > NAMES_IN_WARNING else "")
            form = "[age]_[gender]_[race]_[datetime]" + (".jpg.chip.jpg" if opts.image_set == "aligned" else ".jpg")
            warnings.warn(DataNotice(f"utkface: skipped {len(malformed)} file(s) whose names are not {form}: {shown} "
                                     "(listed in the run's dataset.json, info.malformed_names)"))
        table = pd.DataFrame(rows)
        table["split"] = splitting.stratified_split(
            strata(table, ("race", "gender")), {"test": opts.test_fraction, "val": opts.val_fraction}, opts.split_seed)
        info = {
            "protocol": ("no official split: "
                         + splitting.describe({"test": opts.test_fraction, "val": opts.val_fraction},
                                              opts.split_seed, "race x gender", "all parsed images")
                         + "; train = the rest"),
            "image_set": opts.image_set,
            "folders": [str(f) for f in folders],
            "parsed_images": len(table),
            "malformed_names": {"count": len(malformed), "names": malformed,
                                "rule": f"skipped: names not matching {pattern.pattern} (age <= {MAX_AGE})"},
            "on_bad_image": opts.on_bad_image,
        }
        return table, base, info
