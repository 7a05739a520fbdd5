"""A run's data as its configuration loads it: checked for coverage, capped by the sample limits,
the evaluation splits centre-cropped (:func:`load_bundle`); and ``dataset.json``, the description
of it a run folder keeps (:func:`dataset_meta`, also what rebuilding the method needs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fairbench.config import RunConfig
from fairbench.data.base import DatasetBundle, Task
from fairbench.data.coverage import check_coverage, untested_error
from fairbench.pipeline import center_crop_view, decode_size
from fairbench.data.run_fingerprint import open_dataset


def load_bundle(cfg: RunConfig) -> DatasetBundle:
    dataset = open_dataset(cfg)
    # decoded larger than the input for the "paper" transform (its Resize(460)); see fairbench.pipeline
    bundle = dataset.load(Task(cfg.data.target, tuple(cfg.data.protected)),
                          decode_size(cfg.data.image_size, cfg.train.transform))
    for name in ("train", "val", "test"):
        if name not in bundle.splits or len(bundle.splits[name]) == 0:
            raise ValueError(f"dataset {cfg.data.name!r} has an empty {name!r} split; check the data and the options")
    protected = tuple(cfg.data.protected)
    # file datasets were checked on their label table before decoding; this covers generated ones and skipped images
    check_coverage(cfg.data.name, cfg.data.target, bundle.classes,
                   {k: np.asarray(bundle.classes, dtype=object)[s.targets] for k, s in bundle.splits.items()},
                   {k: s.group_labels(protected) for k, s in bundle.splits.items()})
    rng = np.random.default_rng(cfg.train.seed)
    limits = {"train": cfg.data.max_train_samples, "val": cfg.data.max_eval_samples, "test": cfg.data.max_eval_samples}
    for name, limit in limits.items():
        split = bundle.splits.get(name)
        if split is not None and limit is not None and limit < len(split):
            bundle.splits[name] = split.subset(np.sort(rng.choice(len(split), size=limit, replace=False)))
            bundle.info.setdefault("subsampled", {})[name] = limit
    bundle.__post_init__()  # refresh the group vocabulary after subsampling
    untested = sorted(set(bundle.splits["train"].group_labels(protected)) - set(bundle.splits["test"].group_labels(protected)))
    if untested:  # the full splits had it (checked above): the test cap drew none of its images
        raise untested_error(cfg.data.name, untested, f"--max-eval-samples {cfg.data.max_eval_samples} drew none of "
                             "its test images; raise it (or leave it out)")
    for name, split in bundle.splits.items():
        if name != "train":  # evaluation sees the centre crop (a view); training crops at random
            split.images = center_crop_view(split.images, cfg.data.image_size)
    return bundle


def dataset_meta(bundle: DatasetBundle) -> dict[str, Any]:
    train = bundle.splits["train"]
    return {
        "name": bundle.name,
        "task": {"target": bundle.task.target, "protected": list(bundle.task.protected)},
        "classes": bundle.classes,
        "group_names": bundle.group_names,
        "split_sizes": {k: len(v) for k, v in bundle.splits.items()},
        "group_counts": {
            k: pd.Series(v.group_labels(bundle.task.protected)).value_counts().sort_index().to_dict()
            for k, v in bundle.splits.items()
        },
        "info": bundle.info,
        # what rebuilding the method needs (shapes of group-aware heads, per-sample tables)
        "train_size": len(train),
        "train_targets": train.targets.tolist(),
        "train_groups": bundle.group_codes("train").tolist(),
        "train_attributes": {k: v.tolist() for k, v in bundle.attribute_codes("train").items()},
    }
