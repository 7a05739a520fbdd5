"""The one training / evaluation loop every method runs through.

Selection protocol: after each epoch the model is evaluated on the validation split and
the checkpoint is selected by the configured rule on validation metrics only. The test
split is predicted once, at the end, with the selected checkpoint, and once more for each
other validation rule whose best epoch differs (:mod:`fairbench.rule_checkpoints`).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import random
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from fairbench import checkpointing, distributed, registry, timing
from fairbench.config import RunConfig, run_id
from fairbench.cost import (BUDGET_FIELDS, BudgetError, CostMeter, TrainingCost, epochs_for_budget,
                            probe_prediction_pass, probe_update)
from fairbench.data.base import DatasetBundle, DatasetError, DataSplit, Task
from fairbench.data.coverage import check_coverage, untested_error
from fairbench.methods.base import Batch, Method, MethodContext, TrainConfigView
from fairbench.metrics.specs import history_keys
from fairbench.pipeline import (BatchStream, augment_uint8, center_crop_view, decode_size, epoch_batches,
                                eval_batches, to_float)
from fairbench.run_lease import LeaseLost, check_owned
from fairbench.run_lease import hold as hold_run
from fairbench.rule_checkpoints import RuleBests, checkpoint_file, predictions_split
from fairbench.run_store import (RunRecord, RunStoreError, RunWriter, check_writable, environment, now, read_json,
                                 storage_errors)
from fairbench.selection import get_rule


class RunAlreadyDone(Exception):
    def __init__(self, path: Path):
        super().__init__(f"this configuration already ran to completion: {path} (use --force to run it again)")
        self.path = path


class RunRefused(ValueError):
    """The run folder is in a state this run must not touch (in use, unreadable, foreign checkpoint)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run, with what became of the run folder (the one line the CLI prints)."""


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite."""


def default_threads() -> int:
    """torch CPU threads when neither ``--threads`` nor ``train.threads`` says: what
    ``OMP_NUM_THREADS`` says if set, else one per core this process may use (its affinity mask),
    less the cores other processes keep busy right now, at least one. torch's own default takes
    every core; beside one busy process on a shared 2-core machine its threads wait for each
    other and a run is many times slower (docs/configuration.md, "Threads")."""
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores - _busy_cores(cores))


def _busy_cores(cores: int) -> int:
    """Cores other processes keep busy: the one-minute load average (before this run adds to it)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
        return 0
    return min(cores, int(load + 0.5))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use --set train.device=cpu")
    return device


def seed_everything(seed: int, deterministic: bool) -> dict[str, int]:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    return {"python": seed, "numpy": seed % 2**32, "torch": seed, "sampler": seed}


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- data -------------------------------------------------------------------------------------

def _dataset(cfg: RunConfig):
    dataset_cls = registry.datasets.get(cfg.data.name)
    options = dataset_cls.Options.model_validate(cfg.data.options)
    return dataset_cls(cfg.data.root, options, cfg.data.cache_dir)


def data_seed(cfg: RunConfig) -> int | None:
    """The seed a generated dataset drew this run's images from (``train.seed`` unless
    ``data.options`` set its own); None for data read from files."""
    option = registry.datasets.get(cfg.data.name).data_seed_option
    return None if option is None else cfg.data.options.get(option)


def data_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The dataset's fingerprint for this configuration (see ``Dataset.fingerprint``): checks the
    label files, decodes nothing."""
    return _dataset(cfg).fingerprint(Task(cfg.data.target, tuple(cfg.data.protected)))


def with_fingerprint(cfg: RunConfig, fingerprint: dict[str, Any] | None = None) -> RunConfig:
    """``cfg`` with ``data.fingerprint`` filled from the data as it is now; an error if it was
    filled before (a suite's job) and the data has changed since."""
    fingerprint = fingerprint or data_fingerprint(cfg)
    if cfg.data.fingerprint is not None and cfg.data.fingerprint != fingerprint["digest"]:
        raise DatasetError(f"{cfg.data.name}: the data changed since this run was configured (fingerprint "
                           f"{cfg.data.fingerprint}, now {fingerprint['digest']}); start the command again")
    out = cfg.model_copy(deep=True)
    out.data.fingerprint = fingerprint["digest"]
    return out


def load_bundle(cfg: RunConfig) -> DatasetBundle:
    dataset = _dataset(cfg)
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


def predict_images(method: Method, images: np.ndarray, batch_size: int, device: torch.device, amp: bool,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits N x K for uint8 images, in eval mode, without gradients.

    In a torchrun job every rank predicts a disjoint share of the batches and gets all the
    logits back, in dataset order."""
    method.eval()
    stream = BatchStream(images, device)
    batches = eval_batches(len(images), batch_size)
    procs = distributed.current()
    mine = range(procs.rank, len(batches), procs.world_size)
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode(), autocast(device, amp):
        for k, (_, raw) in zip(mine, stream([batches[k] for k in mine])):
            out[k] = method.predict(to_float(raw.to(device))).float().cpu().numpy()
            if progress:
                progress(len(raw))
    parts = distributed.gather_batches(out, len(batches)) if procs.active else [out[k] for k in range(len(batches))]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def predictions_frame(split: DataSplit, logits: np.ndarray, protected: tuple[str, ...], classes: list[str]) -> pd.DataFrame:
    scores = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    frame = pd.DataFrame({"index": np.arange(len(split)), "sample_id": split.sample_ids, "target": split.targets})
    frame["group"] = split.group_labels(protected)
    for col in protected:
        frame[col] = split.attributes[col].astype(str).to_numpy()
    for k in range(scores.shape[1]):
        frame[f"score_{k}"] = scores[:, k]
    frame["pred"] = logits.argmax(1)
    return frame


def report_for(frame: pd.DataFrame, group_order: list[str] | None = None) -> dict[str, Any]:
    """Every metric of a predictions frame; per-group entries in ``group_order`` (the dataset's)."""
    from fairbench.metrics import evaluate_predictions

    score_cols = [c for c in frame.columns if c.startswith("score_")]
    report = evaluate_predictions(
        frame["target"].to_numpy(), frame["pred"].to_numpy(), frame["group"].to_numpy(),
        scores=frame[score_cols].to_numpy() if score_cols else None,
    )
    if group_order:
        rank = {g: i for i, g in enumerate(group_order)}
        for key, value in report.items():
            if key.startswith("group_") and isinstance(value, dict):
                report[key] = dict(sorted(value.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    return report


# -- model construction ---------------------------------------------------------------------------

def build_method(cfg: RunConfig, bundle: DatasetBundle, device: torch.device, steps_per_epoch: int) -> Method:
    from fairbench.backbones import create_backbone

    method_cls = registry.methods.get(cfg.method)
    train = bundle.splits["train"]
    pretrained = cfg.backbone.pretrained
    ctx = MethodContext(
        num_classes=len(bundle.classes),
        train=TrainConfigView(cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.backbone_lr,
                              cfg.train.momentum, cfg.train.weight_decay),
        steps_per_epoch=steps_per_epoch,
        image_size=cfg.data.image_size,
        device=device,
        make_backbone=lambda: create_backbone(cfg.backbone.name, pretrained),
        train_targets=train.targets.copy(),
    )
    if method_cls.uses_train_groups:  # demographic labels reach only methods that declare them
        ctx.train_groups = bundle.group_codes("train")
        ctx.group_names = list(bundle.group_names)
        ctx.train_attributes = bundle.attribute_codes("train")
        ctx.attribute_sizes = {c: int(max(v.max() + 1, 1)) for c, v in bundle.attribute_codes("train").items()}
    hparams = method_cls.Hparams.model_validate(cfg.hparams)
    return method_cls(ctx, hparams).to(device)


def load_trained_method(run_dir: Path, device: str = "auto") -> tuple[Method, RunConfig]:
    """Rebuild a finished run's method with its selected weights (for eval / explain)."""
    record = RunRecord(Path(run_dir))
    cfg = RunConfig.model_validate({k: v for k, v in record.config().items() if k != "run_id"})
    dev = pick_device(device)
    meta = read_json(record.path / "dataset.json")
    bundle_stub = _StubBundle(meta)
    # The checkpoint holds every weight: build without fetching pretrained ones (offline machines).
    build_cfg = cfg.model_copy(deep=True)
    build_cfg.backbone.pretrained = False
    method = build_method(build_cfg, bundle_stub, dev, steps_per_epoch=1)  # type: ignore[arg-type]
    state = load_checkpoint(record.path / "checkpoint.pt", dev, "refusing to load",
                            "train the run again (its command with --force)")
    method.load_state_dict(state["model"])
    method.eval()
    return method, cfg


class _StubBundle:
    """Enough of a DatasetBundle to rebuild a method without reloading its training data."""

    def __init__(self, meta: dict[str, Any]):
        self.classes = meta["classes"]
        self.group_names = meta["group_names"]
        n = meta["train_size"]
        self.splits = {"train": _StubSplit(np.asarray(meta["train_targets"], dtype=np.int64))}
        self._groups = np.asarray(meta.get("train_groups") or np.zeros(n), dtype=np.int64)
        self._attributes = {k: np.asarray(v, dtype=np.int64) for k, v in meta.get("train_attributes", {}).items()}

    def group_codes(self, split: str) -> np.ndarray:
        return self._groups

    def attribute_codes(self, split: str) -> dict[str, np.ndarray]:
        return self._attributes


@dataclass
class _StubSplit:
    targets: np.ndarray


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


# -- the loop ---------------------------------------------------------------------------------------

class _Trainer:
    """The TrainerView handed to methods between epochs."""

    def __init__(self, method: Method, bundle: DatasetBundle, cfg: RunConfig, device: torch.device):
        self.method, self.bundle, self.cfg, self.device = method, bundle, cfg, device

    def predict_train(self) -> np.ndarray:
        images = center_crop_view(self.bundle.splits["train"].images, self.cfg.data.image_size)  # the eval transform
        logits = predict_images(self.method, images, self.cfg.train.eval_batch_size, self.device, self.cfg.train.amp)
        self.method.train()
        return logits


def _apply_budget(cfg: RunConfig, bundle: DatasetBundle, device: torch.device,
                  n_batches: int) -> tuple[RunConfig, dict[str, Any] | None]:
    """With ``train.budget_steps`` / ``budget_flops``: the epochs that fit, measured on one update of
    a probe copy of the method (every generator is put back afterwards, so the run is exactly the
    run with those epochs given directly); the configuration with them, and what the budget was."""
    key = next((k for k in ("budget_steps", "budget_flops") if getattr(cfg.train, k) is not None), None)
    if key is None:
        return cfg, None
    generators = checkpointing.rng_states()
    train = bundle.splits["train"]
    provisional = cfg.model_copy(deep=True)
    provisional.train.epochs = 10**6  # only one update is probed; a method may check its phases fit
    probe_method = build_method(provisional, bundle, device, n_batches)
    rows = np.arange(cfg.train.batch_size)

    def first_batch() -> Batch:
        raw = torch.from_numpy(np.ascontiguousarray(train.images[rows])).to(device)
        x = augment_uint8(raw, cfg.train.crop_padding, torch.Generator().manual_seed(0), size=cfg.data.image_size)
        batch = Batch(x=x, y=torch.from_numpy(train.targets[rows]).to(device), index=torch.from_numpy(rows).to(device))
        if probe_method.uses_train_groups:
            batch.group = torch.from_numpy(bundle.group_codes("train")[rows]).to(device)
            batch.attributes = {k: torch.from_numpy(v[rows]).to(device) for k, v in bundle.attribute_codes("train").items()}
        return batch

    with autocast(device, cfg.train.amp):
        per_update = probe_update(probe_method, device, first_batch)
    trains_nothing = not any(p.requires_grad for p in probe_method.parameters())
    pass_flops = 0.0
    if key == "budget_flops" and probe_method.training_set_passes(provisional.train.epochs):
        view = center_crop_view(train.images[rows], cfg.data.image_size)  # predict_train's transform
        x = to_float(torch.from_numpy(np.ascontiguousarray(view)).to(device))
        with autocast(device, cfg.train.amp):
            pass_flops = probe_prediction_pass(probe_method, x, len(train.targets))
    epochs, per_epoch = epochs_for_budget(key, getattr(cfg.train, key), per_update, n_batches, cfg.method,
                                          trains_nothing, pass_flops, probe_method.training_set_passes)
    cfg = cfg.model_copy(deep=True)
    cfg.train.epochs = epochs
    checkpointing.restore_rng_states(generators)
    return cfg, {"key": key, "amount": getattr(cfg.train, key), "epochs": epochs, "per_epoch": per_epoch,
                 "per_update": {"optimizer_steps": per_update.optimizer_steps, "train_flops": per_update.train_flops},
                 **({"training_set_pass_flops": pass_flops} if pass_flops else {})}


def _existing_state(path: Path, force: bool) -> str | None:
    """State of an existing run folder, or an error if this run must leave it alone."""
    if not path.exists():
        return None
    if not path.is_dir():
        raise RunRefused(f"{path} exists and is not a run folder; move it away")
    status = RunRecord(path).status()
    state = status.get("state")
    if state == "running":
        raise RunRefused(f"{path} is being trained right now by process {status.get('pid')} on {status.get('host')}; "
                         "wait for it to finish (or stop it) before running this configuration")
    if state == "done" and not force:
        raise RunAlreadyDone(path)
    if (path / "status.json").is_file() and status.get("unreadable") and not force:
        raise RunRefused(f"{path / 'status.json'} is unreadable, so whether the run finished is unknown; "
                         "fix or remove that file, or pass --force to train it again (the folder is kept until "
                         "the new run has finished)")
    return state


def load_checkpoint(path: Path, map_location: Any, refusal: str, remedy: str) -> Any:
    """``torch.load(weights_only=True)``, with one clear error for a file it refuses or cannot read."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise RunRefused(f"{refusal} {path}: it holds Python objects other than tensors and plain values, which "
                         f"torch.load(weights_only=True) does not run (they could execute code); {remedy}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunRefused(f"{refusal} {path}: not a readable checkpoint ({first}); {remedy}") from None


def _load_resume_state(path: Path, rid: str, method: Method) -> dict[str, Any] | None:
    """``last.pt`` of an interrupted run, checked against this run's model; None if there is none."""
    resume = path / "last.pt"
    if not resume.is_file():
        return None
    state = load_checkpoint(resume, "cpu", "refusing to resume from", "delete it to train from the start")
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise RunRefused(f"refusing to resume from {resume}: not a fairbench checkpoint; delete it to train from the start")
    if state.get("run_id", rid) != rid:
        raise RunRefused(f"refusing to resume from {resume}: it belongs to run {state['run_id']}, not {rid}; "
                         "delete it to train from the start")
    try:
        method.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise RunRefused(f"refusing to resume from {resume}: its weights do not fit this configuration's model "
                         f"({first}); it comes from another configuration: delete it to train from the start") from None
    return state


def _swap_in(new: Path, final: Path) -> None:
    """Put the finished run ``new`` where ``final`` is: one atomic exchange of the two folders
    (Linux renameat2), else rename the old one aside first; then delete the old one.

    Only while this process still owns ``final``'s lease: one that lost it (frozen for longer than
    the lease, then taken over) raises :class:`LeaseLost` and touches neither folder."""
    check_owned(final)
    backup = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        exchanged = libc.renameat2(-100, os.fsencode(new), -100, os.fsencode(final), 2) == 0  # AT_FDCWD, RENAME_EXCHANGE
    except (OSError, AttributeError):
        exchanged = False
    if exchanged:
        os.replace(new, backup)  # ``new`` now holds the old run
    else:
        os.replace(final, backup)
        os.replace(new, final)
    shutil.rmtree(backup, ignore_errors=True)


def execute(cfg: RunConfig, runs_dir: Path, *, force: bool = False, reporter: "Reporter | None" = None) -> Path:
    """Train, select on validation, test once; returns the run folder.

    Everything that can be checked is checked before the run folder is touched: the data (its
    fingerprint is part of the run id), the runs folder's permissions, the images, the model's
    weights and any checkpoint to resume from. With ``force``, a finished (or failed) run is
    trained again beside the old one, in a hidden folder, and swapped in only when it is done."""
    from fairbench.progress import Reporter

    clock = timing.PhaseClock(timing.take_job_start())  # "startup" until here: the process, imports, the CLI
    clock.enter("data")
    reporter = reporter or Reporter(quiet=True)
    runs_dir = Path(runs_dir)
    fingerprint = data_fingerprint(cfg)
    cfg = with_fingerprint(cfg, fingerprint)
    rid = run_id(cfg)
    final = runs_dir / rid
    procs = distributed.from_environment()  # a torchrun job: rank 0 owns the folder, the others follow
    reporter = distributed.silent(reporter, procs)
    with distributed.process_group(procs, cfg.train.device):
        if procs.is_main:
            check_writable(runs_dir)
        with contextlib.ExitStack() as held:
            if procs.is_main:
                with storage_errors(final.parent, name_the_file=True):  # a full disk can fail the lease's marker file
                    held.enter_context(hold_run(final))  # else RunBusy (fairbench.run_lease)
            return _execute_owned(cfg, rid, final, fingerprint, force, reporter, procs, clock)


def _execute_owned(cfg: RunConfig, rid: str, final: Path, fingerprint: dict[str, Any], force: bool,
                   reporter: "Reporter", procs: distributed.Processes = distributed.Processes(),
                   clock: timing.PhaseClock | None = None) -> Path:
    clock = clock or timing.PhaseClock(time.time())
    clock.enter("setup")
    runs_dir = final.parent
    if procs.active:  # refused before anything is read or written
        distributed.check_method(registry.methods.get(cfg.method), cfg.method)
        distributed.shard_size(cfg.train.batch_size, procs.world_size)
    state = distributed.on_main(lambda: _existing_state(final, force), procs)
    aside = force and state is not None
    path = runs_dir / f".{rid}.force-{os.getpid()}" if aside else final  # owned through final's lease
    # the evaluations of the run being replaced belong to its weights: they go with it
    discarded = [p.name for p in RunRecord(final).evaluations()] if aside and procs.is_main else []
    device = distributed.device_for(cfg.train.device, procs) if procs.active else pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seeds = seed_everything(cfg.train.seed, cfg.train.deterministic)
    reporter.log(f"run {rid}: {cfg.method} on {cfg.data.name} ({cfg.data.target} ~ {'+'.join(cfg.data.protected)}), "
                 f"{cfg.backbone.name}, {cfg.data.image_size}px, device {device}, {torch.get_num_threads()} CPU thread(s)")
    if discarded:
        reporter.log(f"note: --force replaces {final} once this run is done, and with it its evaluations "
                     f"({', '.join(discarded)}: they evaluated the old weights); redo them then with `fairbench eval "
                     f"{final} --dataset NAME [--split SPLIT] [--data-root PATH]` (a suite's: `fairbench suite run`)")
    with clock.phase("data"):
        bundle = load_bundle(cfg)
    train = bundle.splits["train"]
    n_batches = len(train) // cfg.train.batch_size
    if n_batches == 0:
        raise ValueError(f"the training split has {len(train)} samples, fewer than one batch of {cfg.train.batch_size}; "
                         "lower --set train.batch_size")
    with clock.phase("budget_probe"):
        cfg, budget = _apply_budget(cfg, bundle, device, n_batches)
    try:
        method = build_method(cfg, bundle, device, n_batches)
    except ValueError as exc:  # a method whose phases do not fit the epochs a budget gave it
        if budget is None:
            raise
        raise BudgetError(f"train.{budget['key']}={budget['amount']:g} gives {cfg.method} {budget['epochs']} "
                          f"epoch(s), which it cannot use: {exc}") from None
    resume_state = None if aside else distributed.on_main(lambda: _load_resume_state(path, rid, method), procs)
    # Every check has passed: only now is the runs folder written to.
    if procs.is_main:  # we hold the run's lease: hidden folders of earlier --force runs of it are leftovers
        for stale in runs_dir.glob(f".{rid}.*"):
            if stale.is_dir() and stale != path:
                shutil.rmtree(stale, ignore_errors=True)
    created = not path.exists()
    env = environment(str(device))
    if procs.active:
        env["distributed"] = {"world_size": procs.world_size, "backend": torch.distributed.get_backend(),
                              "global_batch_size": cfg.train.batch_size,
                              "batch_size_per_process": cfg.train.batch_size // procs.world_size,
                              "sync_batchnorm": cfg.train.sync_batchnorm}
    try:
        writer = RunWriter(path, lease_of=final) if procs.is_main else distributed.DiscardWrites()
        writer = timing.TimedCalls(writer, clock, "writing")
        writer.write_json("config.json", {**cfg.model_dump(mode="json"), "run_id": rid})
        writer.write_json("environment.json", env)
        writer.set_status("running", epoch=None, started=env["started"])
        writer.write_json("dataset.json", {**dataset_meta(bundle), "fingerprint": fingerprint, "data_seed": data_seed(cfg)})
    except RunStoreError:
        if created or aside:
            shutil.rmtree(path, ignore_errors=True)
        raise
    t0 = time.time()
    epoch = None
    try:
        trainer = _Trainer(method, bundle, cfg, device)
        sampler_rng = np.random.default_rng(cfg.train.seed)
        aug_gen = torch.Generator().manual_seed(cfg.train.seed)
        groups_t = torch.from_numpy(bundle.group_codes("train"))
        attrs_t = {k: torch.from_numpy(v) for k, v in bundle.attribute_codes("train").items()}
        targets_t = torch.from_numpy(train.targets)
        stream = BatchStream(train.images, device, prefetch=cfg.train.workers)
        position = checkpointing.Position()
        if resume_state is not None:
            position = checkpointing.restore(resume_state, method, sampler_rng, aug_gen)
            reporter.log(f"resuming at epoch {position.epoch + 1}, step {position.step} ({path / 'last.pt'})")
            before = resume_state.get("torch_threads")
            if before is not None and device.type == "cpu" and before != torch.get_num_threads():
                reporter.log(f"note: the interrupted run trained on {before} CPU thread(s), this one on "
                             f"{torch.get_num_threads()}: the result will not be bit for bit the uninterrupted "
                             f"one (other summation orders); --threads {before} resumes exactly")
        resume_mid_epoch = position.batches is not None
        history, best = position.history, position.best
        # the best epoch of every other validation rule, its weights kept until test is predicted
        rules = RuleBests(cfg.selection, position.rule_bests, resumed=resume_state is not None)
        # what training costs (steps, images, FLOPs, time, memory), carried over a resume
        meter = CostMeter(method, device, TrainingCost.from_json((resume_state or {}).get("cost")))
        # each rank trains on its rows of every global batch (augmented with the global batch's draws)
        rows = distributed.shard_rows(cfg.train.batch_size, procs) if procs.active else None
        averager = distributed.GradientAverager() if procs.active else None
        every = cfg.train.checkpoint_every_steps

        def agree_on_batchnorm() -> None:  # before evaluations and checkpoints: the ranks' mean statistics
            if procs.active and not cfg.train.sync_batchnorm:
                distributed.average_batchnorm_statistics(method)

        def save_last(at: checkpointing.Position) -> None:
            if at.batches is not None:  # mid-epoch; at an epoch's end they were agreed before validation
                agree_on_batchnorm()
            writer.save_checkpoint("last.pt", {**checkpointing.training_state(method, at, sampler_rng, aug_gen),
                                               "run_id": rid, "cost": meter.cost.to_json(),
                                               "torch_threads": torch.get_num_threads()})

        val = bundle.splits["val"]
        # a halving search's rung: stop, resumable, after this many epochs (never a --force run's hidden copy)
        share = cfg.train.stop_after_share
        stop_at = None if share is None or share >= 1 or aside else max(1, math.ceil(share * cfg.train.epochs - 1e-9))
        clock.enter("training")
        with meter, reporter.training(cfg.train.epochs, n_batches, len(val)) as bar:
            for epoch in range(position.epoch, cfg.train.epochs):
                if stop_at is not None and epoch >= stop_at and not resume_mid_epoch:
                    writer.set_status("incomplete", reason=f"paused after epoch {epoch}/{cfg.train.epochs} (a rung of "
                                      "a halving search); run it again to resume", epoch=epoch - 1,
                                      started=env["started"], ended=now(), paused=True)
                    reporter.log(f"paused after epoch {epoch}/{cfg.train.epochs} (train.stop_after_share={share:g})")
                    return final
                writer.set_status("running", epoch=epoch, started=env["started"])
                method.train()
                weights = meter.between_epochs(lambda: method.begin_epoch(epoch, trainer))  # JTT's identification pass
                meter.begin_epoch()
                method.train()
                if procs.active:
                    if cfg.train.sync_batchnorm:
                        distributed.convert_batchnorm(method)  # again: a method may have built new layers
                    distributed.broadcast_state(method)
                    averager.attach(method.optimizers)  # gradients averaged over the ranks before each step
                if resume_mid_epoch:  # begin_epoch replayed; the checkpoint wins over whatever it changed
                    position = checkpointing.restore(resume_state, method, sampler_rng, aug_gen)
                    meter.resume_epoch(TrainingCost.from_json(resume_state.get("cost")))
                    batches, first, sums = position.batches, position.step, position.sums
                    resume_mid_epoch = False
                else:
                    batches = epoch_batches(len(train), cfg.train.batch_size, sampler_rng, weights)
                    first, sums = 0, {}
                bar.start_epoch(epoch)
                shards = batches[first:] if rows is None else [b[rows] for b in batches[first:]]
                for step, (idx, raw) in enumerate(stream(shards), start=first):
                    clock.mark("first_batch")
                    idx_t = torch.from_numpy(idx)
                    x = augment_uint8(raw, cfg.train.crop_padding, aug_gen,
                                      None if rows is None else (rows, cfg.train.batch_size), size=cfg.data.image_size)
                    batch = Batch(x=x, y=targets_t[idx_t].to(device), index=idx_t.to(device))
                    if method.uses_train_groups:
                        batch.group = groups_t[idx_t].to(device)
                        batch.attributes = {k: v[idx_t].to(device) for k, v in attrs_t.items()}
                    with autocast(device, cfg.train.amp):
                        logs = meter.update(lambda: method.update(batch))
                    for k, v in logs.items():
                        v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                        sums[k] = sums.get(k, 0) + v
                    bar.advance_batch(step + 1, sums)  # syncs only when it redraws
                    if every and (step + 1) % every == 0 and step + 1 < len(batches):
                        if procs.active:  # every rank continues from what the checkpoint holds
                            sums = distributed.average_logs(sums)
                        save_last(checkpointing.Position(epoch, step + 1, batches, sums, history, best,
                                                         rules.state()))
                if procs.active:
                    sums = distributed.average_logs(sums)
                train_logs = {k: float(v) / max(1, len(batches)) for k, v in sums.items()}
                diverged = [k for k, v in train_logs.items() if not math.isfinite(v)]
                if diverged:
                    raise TrainingDiverged(
                        f"training diverged in epoch {epoch + 1}/{cfg.train.epochs}: {diverged[0]} is "
                        f"{train_logs[diverged[0]]} (learning rate {cfg.train.lr}); lower it, e.g. "
                        f"--set train.lr={cfg.train.lr / 10:g}")
                agree_on_batchnorm()
                clock.enter("validation")
                val_frame = predictions_frame(val, predict_images(method, val.images, cfg.train.eval_batch_size, device,
                                                                  cfg.train.amp, bar.advance_eval),
                                              bundle.task.protected, bundle.classes)
                val_report = report_for(val_frame, bundle.group_names)
                entry = {"epoch": epoch, "train": train_logs,
                         "val": {k: val_report.get(k) for k in history_keys()},
                         "selectable": method.is_selectable_epoch(epoch), "time": now(),
                         "cost": {"optimizer_steps": meter.cost.optimizer_steps, "train_flops": meter.cost.train_flops}}
                history.append(entry)
                score = get_rule(cfg.selection).score(val_report, epoch)
                if entry["selectable"] and (score > best["score"] or best["epoch"] is None):
                    best = {"score": score, "epoch": epoch, "report": val_report}
                    writer.save_checkpoint("checkpoint.pt", {"model": method.state_dict(), "epoch": epoch})
                    writer.write_predictions("val", val_frame)
                if rules.observe(epoch, val_report, entry["selectable"]):
                    writer.save_checkpoint(checkpoint_file(epoch), {"model": method.state_dict(), "epoch": epoch})
                writer.write_json("history.json", history)
                save_last(checkpointing.Position(epoch, history=history, best=best, rule_bests=rules.state()))
                if procs.is_main:  # after last.pt: the files its rule_bests point at stay until then
                    rules.prune(path)
                bar.end_epoch(epoch, train_logs, val_report, best["epoch"] == epoch)
                clock.enter("training")
        clock.move("training", "flop_counting", meter.counting_seconds())
        clock.enter("test")
        epoch = None
        if best["epoch"] is None:
            raise RuntimeError("no epoch was selectable; check the method's phases and --epochs")
        # The selected checkpoint, evaluated once on test.
        if procs.is_main:
            state = torch.load(path / "checkpoint.pt", map_location=device, weights_only=True)
            method.load_state_dict(state["model"])
        if procs.active:
            distributed.broadcast_state(method)
        test = bundle.splits["test"]
        test_frame = predictions_frame(test, predict_images(method, test.images, cfg.train.eval_batch_size, device,
                                                            cfg.train.amp), bundle.task.protected, bundle.classes)
        writer.write_predictions("test", test_frame)
        val_report = best["report"] if best["report"] is not None else distributed.on_main(  # an older last.pt
            lambda: report_for(RunRecord(path).predictions("val"), bundle.group_names), procs)
        test_report = report_for(test_frame, bundle.group_names)
        # every rule's epoch: test predicted once per epoch other than the run's own (chosen on validation above)
        tested = {best["epoch"]: (test_report, "predictions_test.csv")}
        by_rule = {} if not rules.active else {cfg.selection: {**best, "report": val_report}, **rules.bests}
        for name, chosen in by_rule.items():
            at = chosen["epoch"]
            if at is None:
                continue
            if at not in tested:
                if procs.is_main:
                    saved = load_checkpoint(path / checkpoint_file(at), device, "refusing to predict from",
                                            "delete it and train the run again (its command with --force)")
                    method.load_state_dict(saved["model"])
                if procs.active:
                    distributed.broadcast_state(method)
                frame = predictions_frame(test, predict_images(method, test.images, cfg.train.eval_batch_size, device,
                                                               cfg.train.amp), bundle.task.protected, bundle.classes)
                writer.write_predictions(predictions_split(at), frame)
                tested[at] = (report_for(frame, bundle.group_names), f"predictions_{predictions_split(at)}.csv")
            spent = next((h.get("cost", {}).get("train_flops") for h in history if h["epoch"] == at), None)
            by_rule[name] = {"epoch": at + 1, "score": chosen["score"], "train_flops": spent,
                             "val": chosen["report"], "test": tested[at][0], "predictions": tested[at][1]}
        metrics = {
            # counted from 1, as the log and the tables count (run_store.selected_epoch reads older records)
            "selection": {"rule": cfg.selection, "selected_epoch": best["epoch"] + 1, "score": best["score"]},
            "val": val_report,
            "test": test_report,
            "seeds": seeds,
            "wall_time_s": time.time() - t0,
            "cost": {**meter.cost.to_json(), "processes": procs.world_size},
        }
        clock.enter("writing")
        if budget is not None:
            budget["used"] = getattr(meter.cost, BUDGET_FIELDS[budget["key"]])
            metrics["budget"] = budget
        if rules.active:
            metrics["rules"] = by_rule  # fairbench.rule_checkpoints; epochs counted from 1
        metrics["timing"] = clock.breakdown()  # fairbench.timing: up to this write, which takes milliseconds
        writer.write_json("metrics.json", metrics)
        if procs.is_main:
            (path / "last.pt").unlink(missing_ok=True)
            rules.prune(path, finished=True)
        writer.write_json("environment.json", {**env, "ended": now(), "wall_time_s": time.time() - t0})
        writer.set_status("done", started=env["started"], ended=now(), wall_time_s=time.time() - t0)
        if aside and procs.is_main:
            _swap_in(path, final)
            reporter.log(f"replaced the earlier run in {final}"
                         + (f"; its evaluations were discarded: {', '.join(discarded)}" if discarded else ""))
        return final
    except BaseException as exc:
        during = f" during epoch {epoch + 1}/{cfg.train.epochs}" if epoch is not None else ""
        if aside:  # the earlier run was never touched: keep it, drop the half-made replacement
            if procs.is_main:
                shutil.rmtree(path, ignore_errors=True)
            if isinstance(exc, LeaseLost):  # final is another process's now: not a word about its contents
                raise
            if isinstance(exc, KeyboardInterrupt):
                raise RunInterrupted(f"interrupted{during}: the earlier run in {final} is unchanged") from None
            reporter.log(f"the earlier run in {final} is unchanged")
            raise
        try:
            if isinstance(exc, KeyboardInterrupt):
                writer.set_status("incomplete", reason=f"interrupted{during}; run the same command again to resume",
                                  epoch=epoch, started=env["started"], ended=now())
                raise RunInterrupted(f"interrupted{during}: {path} is incomplete; run the same command again to "
                                     "resume it") from None
            elif isinstance(exc, RunStoreError):
                if created and not (path / "last.pt").is_file():  # nothing to resume: leave no half-made record
                    shutil.rmtree(path, ignore_errors=True)
                    raise
                writer.set_status("incomplete", reason=f"{exc}{during}", epoch=epoch, started=env["started"], ended=now())
            else:
                writer.set_status("failed", error=f"{type(exc).__name__}: {exc}", epoch=epoch,
                                  traceback=traceback.format_exc(), started=env["started"], ended=now())
        except RunStoreError:  # the disk is full or gone: the status stays "running", read as incomplete
            pass
        raise

