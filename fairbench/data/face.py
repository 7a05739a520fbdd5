"""What the official face sets (FairFace, UTKFace, LFWA+, and CelebA where it fits) share.

Each of them reads its own label files into one table (a row per image: ``path``, ``split``,
``source`` and the label columns, see :mod:`fairbench.data.image_table`) and declares its
targets' class names; :class:`FaceDataset` does the rest the same way for all: the paper's
defaults (gender ~ race x gender at 448 px), the unknown-target error, the display order of the
groups and the assembly into a bundle. The option types below keep their names, bounds and
descriptions identical across the sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Sequence

import pandas as pd
from pydantic import Field

from fairbench.data import vocab
from fairbench.data.base import SPLITS, Dataset, DatasetBundle, DatasetError, Task
from fairbench.data.image_table import build_bundle

OnBadImage = Annotated[Literal["error", "skip"], Field(description="unreadable image: error, or skip and count")]
ValFraction = Annotated[float, Field(gt=0, lt=1, description="share of the official train held out as val, per group")]
SplitSeed = Annotated[int, Field(ge=0, description="seed of the train / val split")]


def strata(table: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """The stratum of each row for a stratified split: its ``columns`` joined by ``|``."""
    out = table[columns[0]]
    for column in columns[1:]:
        out = out + "|" + table[column]
    return out


class FaceDataset(Dataset):
    """A face set read from its official files: subclasses set ``summary``, ``Options`` (with an
    ``on_bad_image`` field), ``race_order`` and implement ``target_classes`` and ``label_table``."""

    default_target = "gender"
    default_protected = ("race", "gender")
    profile = "paper"
    default_image_size = 448  # the paper's recipe
    target_concepts = {"gender": "gender"}
    #: display order of the race groups (tables list the groups in it; values not in it sort last)
    race_order: ClassVar[list[str]] = []

    def target_classes(self) -> dict[str, list[str]]:
        """Class names of each target, in class-index order (its keys are :meth:`targets`)."""
        raise NotImplementedError

    def label_table(self, task: Task) -> tuple[pd.DataFrame, Path, dict[str, Any]]:
        """The table of every labelled image, the folder its paths are relative to and what to
        record in ``info``; decodes nothing."""
        raise NotImplementedError

    def targets(self) -> list[str]:
        return list(self.target_classes())

    def classes_of(self, task: Task) -> list[str]:
        classes = self.target_classes().get(task.target)
        if classes is None:
            raise DatasetError(f"{self.registered_name} has no target {task.target!r}; choose one of {self.targets()}")
        return list(classes)

    def value_order(self) -> dict[str, list[str]]:
        """Display order of the protected attributes' values (the paper's tables: M then F)."""
        return {"race": self.race_order, "gender": vocab.GENDER_ORDER}

    def load(self, task: Task, image_size: int, splits: Sequence[str] = SPLITS) -> DatasetBundle:
        table, image_root, info = self.label_table(task)
        return build_bundle(
            self.registered_name, table, image_root, task, image_size, classes=self.classes_of(task),
            cache_dir=self.cache_dir, on_bad_image=self.options.on_bad_image, info=info,  # type: ignore[attr-defined]
            targets=self.targets(), splits=splits, value_order=self.value_order(),
        )
