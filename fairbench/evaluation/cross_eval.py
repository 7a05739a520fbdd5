"""Cross-dataset evaluation: a finished run's selected model on another dataset's split.

The run's target and class names are mapped onto the evaluated dataset's, with that dataset's own
groups; the result goes to ``runs/<run_id>/evaluations/<dataset>-<split>/`` with the evaluated
data's fingerprint (other data is kept beside, never over it). ``split = "all"`` takes every image.
Details: docs/configuration.md#evaluating-a-run-on-another-dataset-fairbench-eval
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fairbench import registry
from fairbench.data import vocab
from fairbench.data.base import SPLITS, Dataset, DatasetBundle, DatasetError, Task
from fairbench.pipeline import center_crop_view, decode_size


@dataclass
class CrossEvaluation:
    folder: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    #: the folder of the earlier evaluation of other data this one was written beside (None: none)
    beside: Path | None = None


def _dataset(name: str, root: Path | None, options: dict[str, Any], cache_dir: Path | None) -> Dataset:
    from pydantic import ValidationError

    from fairbench.config import explain_validation_error

    cls = registry.datasets.get(name)
    try:
        opts = cls.Options.model_validate(options)
    except ValidationError as exc:
        raise explain_validation_error(exc, cls.Options, f"options of dataset {name!r}") from None
    return cls(root, opts, cache_dir)


def target_for(run_dataset: str, run_target: str, eval_name: str, eval_dataset: Dataset) -> str:
    """The evaluated dataset's target that means the run's, or an error listing the targets that map."""
    eval_targets = eval_dataset.targets()
    try:
        run_cls = registry.datasets.get(run_dataset)
        run_concepts = run_cls.target_concepts
    except registry.RegistryError:  # trained on a dataset not installed here: match by target name only
        run_cls, run_concepts = None, {}
    target = vocab.mapped_target(run_concepts, run_target, eval_dataset.target_concepts, eval_targets)
    if target is not None:
        return target
    try:
        run_targets = run_cls(None).targets()
    except Exception:  # a plugin dataset that cannot list targets without its files
        run_targets = [run_target]
    pairs = [f"{t} -> {m}" for t in run_targets
             if (m := vocab.mapped_target(run_concepts, t, eval_dataset.target_concepts, eval_targets)) is not None]
    raise DatasetError(
        f"the run's target {run_target!r} ({run_dataset}) has no counterpart in {eval_name} "
        f"(targets: {', '.join(eval_targets)}). Targets of {run_dataset} that map onto {eval_name}: "
        f"{', '.join(pairs) if pairs else 'none'}")


def recorded_fingerprint(folder: Path) -> str | None:
    """The data fingerprint digest an evaluation folder records; None when it holds no evaluation,
    "" when it holds one that records none (made before fingerprints were recorded) or is unreadable."""
    from fairbench.runs.store import read_json

    if not (folder / "metrics.json").is_file():
        return None
    try:
        return str((read_json(folder / "metrics.json").get("data_fingerprint") or {}).get("digest") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def evaluation_folder(run_dir: Path, dataset: str, split: str, digest: str) -> Path:
    """Where the evaluation of ``dataset`` ``split`` with data fingerprint ``digest`` is written:
    ``evaluations/<dataset>-<split>`` when free or holding this same data, else beside it, suffixed
    with the fingerprint (8 hex digits, all 16 in the unlikely case those 8 are taken)."""
    base = Path(run_dir) / "evaluations" / f"{dataset}-{split}"
    for folder in (base, base.with_name(f"{base.name}-{digest[:8]}"), base.with_name(f"{base.name}-{digest}")):
        if recorded_fingerprint(folder) in (None, digest):
            return folder
    raise FileExistsError(f"{base.with_name(f'{base.name}-{digest}')} holds an evaluation of other data; move it away")


#: a split name meaning every image of the dataset: its splits (train, val, test) together
ALL_SPLITS = "all"
#: what an evaluation may read (``fairbench eval --split``, a suite's ``[[evaluate]] split``)
EVAL_SPLITS = (*SPLITS, ALL_SPLITS)


def parts_of(split: str) -> tuple[str, ...]:
    """The dataset splits an evaluation split is made of."""
    return SPLITS if split == ALL_SPLITS else (split,)


def load_split(dataset: Dataset, task: Task, image_size: int, split: str) -> DatasetBundle:
    """Only ``split`` (every split for ``all``) when the loader can load a subset of splits (the
    built-in file loaders can)."""
    if "splits" in inspect.signature(dataset.load).parameters:
        return dataset.load(task, image_size, splits=parts_of(split))
    return dataset.load(task, image_size)


def _predictions(method: Any, cfg: Any, bundle: DatasetBundle, split: str, columns: list[int],
                 protected: tuple[str, ...]) -> pd.DataFrame:
    """The run's predictions on ``split`` of the evaluated data ("all": split by split, then one
    frame), its logit ``columns`` reordered into this dataset's class order."""
    from fairbench.evaluation.predict import predict_images, predictions_frame

    frames = []
    for part in parts_of(split):
        data = bundle.splits[part]
        images = center_crop_view(data.images, cfg.data.image_size)  # the run's evaluation transform
        logits = predict_images(method, images, cfg.train.eval_batch_size or 64, method.ctx.device, cfg.train.amp)
        frames.append(predictions_frame(data, logits[:, columns], protected, bundle.classes))
    if split == ALL_SPLITS:
        frames = [f.assign(split=part) for f, part in zip(frames, parts_of(split))]
    frame = pd.concat(frames, ignore_index=True)
    frame["index"] = range(len(frame))
    return frame


def evaluate_run(
    run_dir: Path,
    dataset: str,
    *,
    data_root: Path | None = None,
    split: str = "test",
    options: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
    protected: tuple[str, ...] | None = None,
    device: str = "auto",
) -> CrossEvaluation:
    from fairbench.config import RunConfig
    from fairbench.evaluation.predict import report_for
    from fairbench.evaluation.trained_model import load_trained_method
    from fairbench.runs.environment import environment
    from fairbench.runs.record import RunRecord
    from fairbench.runs.store import atomic_write_csv, atomic_write_json, check_writable, now, read_json

    run_dir = Path(run_dir)
    record = RunRecord(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    state = record.status.get("state")
    if state != "done" or not (run_dir / "checkpoint.pt").is_file():
        raise ValueError(f"run {run_dir} is not finished (state {state!r}); evaluate a run that completed")
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    cfg = RunConfig.model_validate({k: v for k, v in record.config.items() if k != "run_id"})
    run_classes = list(read_json(run_dir / "dataset.json")["classes"])
    # a read-only run folder is said now, not after the predictions; eval has no --runs-dir to change
    evaluations = run_dir / "evaluations"
    check_writable(evaluations if evaluations.is_dir() else run_dir,
                   unwritable_hint=f"copy the run folder somewhere writable and evaluate the copy "
                                   f"(cp -r {run_dir} DIR; fairbench eval DIR/{run_dir.name} ...)")

    ds = _dataset(dataset, data_root, options or {}, cache_dir)
    target = target_for(cfg.data.name, cfg.data.target, dataset, ds)
    task = Task(target, tuple(protected or type(ds).default_protected))
    fingerprint = ds.fingerprint(task)  # checks the label files; decodes nothing (file datasets)
    folder = evaluation_folder(run_dir, dataset, split, fingerprint["digest"])
    bundle = load_split(ds, task, decode_size(cfg.data.image_size, cfg.train.transform), split)
    missing = [part for part in parts_of(split) if part not in bundle.splits]
    if missing:
        raise DatasetError(f"{dataset} has no {missing[0]!r} split")
    columns = vocab.class_mapping(run_classes, bundle.classes)
    if columns is None:
        raise DatasetError(f"the classes of {dataset} {target!r} {bundle.classes} do not map one-to-one onto the "
                           f"run's classes {run_classes} ({cfg.data.name} {cfg.data.target!r})")

    method, _ = load_trained_method(run_dir, device)
    dev = method.ctx.device  # not next(parameters()): the constant control has none
    frame = _predictions(method, cfg, bundle, split, columns, task.protected)
    report = report_for(frame, bundle.group_names)

    metrics = {
        "dataset": dataset,
        "split": split,
        "run_id": record.run_id,
        "report": report,
        "target": target,
        "protected": list(task.protected),
        "classes": bundle.classes,
        "run_target": cfg.data.target,
        "run_classes": run_classes,
        "logit_columns": columns,  # for each class above, the run's logit column
        "image_size": cfg.data.image_size,
        "options": ds.options.model_dump(mode="json"),
        "data_info": bundle.info,
        "data_fingerprint": fingerprint,
        "group_counts": frame["group"].value_counts().to_dict(),
        "environment": {**environment(str(dev)), "ended": now()},
    }
    atomic_write_csv(folder / "predictions.csv", frame)
    atomic_write_json(folder / "metrics.json", metrics)
    _evaluate_rule_epochs(method, run_dir, folder, cfg, bundle, split, columns, task.protected)
    base = evaluations / f"{dataset}-{split}"
    return CrossEvaluation(folder, metrics, frame, base if folder != base else None)


def _evaluate_rule_epochs(method, run_dir: Path, folder: Path, cfg, bundle: DatasetBundle, split: str,
                          columns: list[int], protected: tuple[str, ...]) -> None:
    """The same data with the weights of every other rule's epoch the run kept
    (``train.keep_rule_checkpoints``): ``<folder>/epoch<N>/`` (``predictions.csv``, ``metrics.json``
    with the report), read by the protocol tables for a rule that chose epoch N. Stale epoch folders
    of an earlier evaluation are removed first."""
    import shutil

    from fairbench.evaluation.predict import report_for
    from fairbench.runs.checkpoint import kept_epochs, load_checkpoint
    from fairbench.runs.store import atomic_write_csv, atomic_write_json

    for stale in folder.glob("epoch*"):
        shutil.rmtree(stale, ignore_errors=True)
    for epoch, path in kept_epochs(run_dir):  # counted from 1
        state = load_checkpoint(path, method.ctx.device, "refusing to evaluate",
                                "train the run again (its command with --force)")
        method.load_state_dict(state["model"])
        method.eval()
        frame = _predictions(method, cfg, bundle, split, columns, protected)
        atomic_write_csv(folder / f"epoch{epoch}" / "predictions.csv", frame)
        atomic_write_json(folder / f"epoch{epoch}" / "metrics.json",
                          {"epoch": epoch, "report": report_for(frame, bundle.group_names)})


def summary_table(evaluation: CrossEvaluation, run_metrics: dict[str, Any]):
    """The per-group table of an evaluation (the end-of-run table's layout)."""
    from fairbench.results.reporting import run_summary

    m = evaluation.metrics
    label = f"{m['dataset']} {m['split']} ({m['target']} ~ {'+'.join(m['protected'])})"
    return run_summary({label: m["report"], "selection": run_metrics["selection"]}, label)


__all__ = ["ALL_SPLITS", "EVAL_SPLITS", "CrossEvaluation", "evaluate_run", "evaluation_folder", "load_split",
           "parts_of", "recorded_fingerprint", "summary_table", "target_for"]
