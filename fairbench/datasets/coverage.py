"""What the splits must hold before anything is trained: every target class, and matching groups.

- every target class in the training split: a model cannot learn a class it never sees (a
  held-out split may lack a rare class: a small validation split often does, and its
  accuracy is still measured on the classes it has);
- every group of a held-out split in the training split: a group nothing was trained on;
- every group of the training split in the test split: its accuracy, and every gap that involves
  it, could not be measured.

Checked on the label table, before any image is decoded (:func:`fairbench.datasets.image_table.build_bundle`),
and again on the decoded splits (``fairbench.evaluation.run_data.load_bundle``) for loaders that assemble no
table and for images skipped as unreadable. The sample caps of smoke runs
(``--max-train-samples`` / ``--max-eval-samples``) thin the splits after these checks and are not
held to them, except that a test cap which removes a group is an error naming the cap.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from fairbench.datasets.base import SPLITS, DatasetError


def _more(items: list[str], what: str) -> str:
    return f" (and {len(items) - 1} more {what})" if len(items) > 1 else ""


def untested_error(name: str, untested: list[str], remedy: str) -> DatasetError:
    """Groups of the training split with no test image (sorted), and what to do about it."""
    return DatasetError(f"{name}: group {untested[0]!r} has training images but none in the test split"
                        f"{_more(untested, 'group(s)')}; its accuracy cannot be measured: {remedy}")


def check_coverage(name: str, target: str, classes: Sequence[str], targets: Mapping[str, Sequence[str]],
                   groups: Mapping[str, Sequence[str]]) -> None:
    """``targets[split]`` / ``groups[split]``: each sample's class name / group label, for the splits
    at hand (a cross-dataset evaluation has only its test split, which is held to nothing here)."""
    if "train" not in targets:
        return
    missing = [c for c in classes if c not in set(targets["train"])]
    if missing:
        raise DatasetError(f"{name}: the 'train' split has no image of class {missing[0]!r} of the target {target!r}"
                           f"{_more(missing, 'class(es)')}; a model cannot learn a class it never sees: add training "
                           "images of it, or choose another --target")
    trained = set(groups["train"])
    for split in (s for s in SPLITS if s != "train" and s in groups):
        unseen = sorted(set(groups[split]) - trained)
        if unseen:
            raise DatasetError(f"{name}: group {unseen[0]!r} has images in the {split!r} split but none in the "
                               f"'train' split{_more(unseen, 'group(s)')}; no model is trained on it: add training "
                               f"images of it, or leave its {split} images out")
    if "test" in groups:
        untested = sorted(trained - set(groups["test"]))
        if untested:
            raise untested_error(name, untested, "add test images of it, or leave its training images out")
