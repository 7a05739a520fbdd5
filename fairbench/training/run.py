"""One training run, start to end: :func:`execute` is the one entry point the CLI and the launchers
call. Train, choose the checkpoint on validation, test once (docs/fair-comparison.md, "Selection").

Everything that can be checked is checked before the run folder is touched: the data (its
fingerprint is part of the run id), the runs folder's permissions, the images, the model's weights
and any checkpoint to resume from. The folder's lifecycle (``--force``, swap) is
:mod:`fairbench.runs.lifecycle`; the epochs :mod:`.epochs`; test and metrics.json :mod:`.final_evaluation`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fairbench import distributed, registry
from fairbench.compute import pick_device, seed_everything
from fairbench.config import RunConfig, run_id
from fairbench.cost import BudgetError
from fairbench.evaluation.run_data import dataset_meta, load_bundle
from fairbench.evaluation.trained_model import build_method
from fairbench.runs import lifecycle
from fairbench.runs.checkpoint import load_resume_state
from fairbench.runs.environment import environment
from fairbench.data.run_fingerprint import data_fingerprint, data_seed, with_fingerprint
from fairbench.runs.lease import hold
from fairbench.runs.store import RunStoreError, RunWriter, check_writable, now, storage_errors
from fairbench.training import timing
from fairbench.training.budget import apply_budget
from fairbench.training.epochs import EpochLoop
from fairbench.training.failure import settle_failure
from fairbench.training.final_evaluation import evaluate_chosen
from fairbench.training.run_progress import Reporter, for_rank
from fairbench.training.run_state import RunState


def execute(cfg: RunConfig, runs_dir: Path, *, force: bool = False, reporter: Reporter | None = None) -> Path:
    """Train, select on validation, test once; returns the run folder.

    With ``force``, a finished (or failed) run is trained again beside the old one, in a hidden
    folder, and swapped in only when it is done."""
    clock = timing.PhaseClock(timing.take_job_start())  # "startup" until here: the process, imports, the CLI
    clock.enter("data")
    reporter = reporter or Reporter(quiet=True)
    runs_dir = Path(runs_dir)
    fingerprint = data_fingerprint(cfg)
    cfg = with_fingerprint(cfg, fingerprint)
    rid = run_id(cfg)
    final = runs_dir / rid
    procs = distributed.from_environment()  # a torchrun job: rank 0 owns the folder, the others follow
    reporter = for_rank(reporter, procs)
    with distributed.process_group(procs, cfg.train.device):
        if procs.is_main:
            check_writable(runs_dir)
        with contextlib.ExitStack() as held:
            if procs.is_main:
                with storage_errors(final.parent, name_the_file=True):  # a full disk can fail the lease's marker file
                    held.enter_context(hold(final))  # else RunBusy (fairbench.runs.lease)
            return _execute_owned(cfg, rid, final, fingerprint, force, reporter, procs, clock)


def _execute_owned(cfg: RunConfig, rid: str, final: Path, fingerprint: dict[str, Any], force: bool,
                   reporter: Reporter, procs: distributed.Processes = distributed.Processes(),
                   clock: timing.PhaseClock | None = None) -> Path:
    clock = clock or timing.PhaseClock(time.time())
    clock.enter("setup")
    if procs.active:  # refused before anything is read or written
        distributed.check_method(registry.methods.get(cfg.method), cfg.method)
        distributed.shard_size(cfg.train.batch_size, procs.world_size)
    existing = distributed.on_main(lambda: lifecycle.existing_state(final, force), procs)
    run = RunState(cfg, rid, lifecycle.place(final, force, existing, procs.is_main), reporter, procs, clock)
    _prepare(run)
    _open_folder(run, fingerprint)
    try:
        loop = EpochLoop(run)
        if not loop.train():  # paused at a halving rung: resumable
            return final
        _finish(run, loop, evaluate_chosen(run, loop))
        return final
    except BaseException as exc:
        replacement = settle_failure(exc, run)
        if replacement is not None:
            raise replacement from None
        raise


def _prepare(run: RunState) -> None:
    """Device, threads, seeds, data, budget, the method and any state to resume: every check before
    the runs folder is written to."""
    cfg, procs, placement = run.cfg, run.procs, run.placement
    run.device = distributed.device_for(cfg.train.device, procs) if procs.active else pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run.seeds = seed_everything(cfg.train.seed, cfg.train.deterministic)
    run.reporter.log(f"run {run.rid}: {cfg.method} on {cfg.data.name} ({cfg.data.target} ~ "
                     f"{'+'.join(cfg.data.protected)}), {cfg.backbone.name}, {cfg.data.image_size}px, device "
                     f"{run.device}, {torch.get_num_threads()} CPU thread(s)")
    if placement.discarded:
        run.reporter.log(f"note: --force replaces {placement.final} once this run is done, and with it its "
                         f"evaluations ({', '.join(placement.discarded)}: they evaluated the old weights); redo them "
                         f"then with `fairbench eval {placement.final} --dataset NAME [--split SPLIT] [--data-root "
                         "PATH]` (a suite's: `fairbench suite run`)")
    with run.clock.phase("data"):
        run.bundle = load_bundle(cfg)
    train = run.bundle.splits["train"]
    run.n_batches = len(train) // cfg.train.batch_size
    if run.n_batches == 0:
        raise ValueError(f"the training split has {len(train)} samples, fewer than one batch of {cfg.train.batch_size}; "
                         "lower --set train.batch_size")
    with run.clock.phase("budget_probe"):
        run.cfg, run.budget = apply_budget(cfg, run.bundle, run.device, run.n_batches)
    budget = run.budget
    try:
        run.method = build_method(run.cfg, run.bundle, run.device, run.n_batches)
    except ValueError as exc:  # a method whose phases do not fit the epochs a budget gave it
        if budget is None:
            raise
        raise BudgetError(f"train.{budget['key']}={budget['amount']:g} gives {cfg.method} {budget['epochs']} "
                          f"epoch(s), which it cannot use: {exc}") from None
    if not placement.aside:
        run.resume_state = distributed.on_main(lambda: load_resume_state(placement.path, run.rid, run.method), procs)


def _open_folder(run: RunState, fingerprint: dict[str, Any]) -> None:
    """Every check has passed: only now is the runs folder written to."""
    cfg, procs, path = run.cfg, run.procs, run.placement.path
    if procs.is_main:  # we hold the run's lease: hidden folders of earlier --force runs of it are leftovers
        lifecycle.remove_stale(run.placement)
    run.created = not path.exists()
    run.env = env = environment(str(run.device))
    if procs.active:
        env["distributed"] = {"world_size": procs.world_size, "backend": torch.distributed.get_backend(),
                              "global_batch_size": cfg.train.batch_size,
                              "batch_size_per_process": cfg.train.batch_size // procs.world_size,
                              "sync_batchnorm": cfg.train.sync_batchnorm}
    try:
        writer = RunWriter(path, lease_of=run.placement.final) if procs.is_main else distributed.DiscardWrites()
        run.writer = writer = timing.TimedCalls(writer, run.clock, "writing")
        writer.write_json("config.json", {**cfg.model_dump(mode="json"), "run_id": run.rid})
        writer.write_json("environment.json", env)
        writer.set_status("running", epoch=None, started=env["started"])
        writer.write_json("dataset.json", {**dataset_meta(run.bundle), "fingerprint": fingerprint,
                                           "data_seed": data_seed(cfg)})
    except RunStoreError:
        if run.created or run.placement.aside:
            shutil.rmtree(path, ignore_errors=True)
        raise
    run.t0 = time.time()


def _finish(run: RunState, loop: EpochLoop, metrics: dict[str, Any]) -> None:
    """Write metrics.json and the closing records; a ``--force`` run is swapped in over the earlier one."""
    placement, path = run.placement, run.placement.path
    run.writer.write_json("metrics.json", metrics)
    if run.procs.is_main:
        (path / "last.pt").unlink(missing_ok=True)
        # kept for cross-dataset evaluations: every rule's epoch but the run's own (checkpoint.pt)
        loop.rules.prune(path, finished=not run.cfg.train.keep_rule_checkpoints, own_epoch=loop.chosen["epoch"])
    run.writer.write_json("environment.json", {**run.env, "ended": now(), "wall_time_s": time.time() - run.t0})
    run.writer.set_status("done", started=run.env["started"], ended=now(), wall_time_s=time.time() - run.t0)
    if placement.aside and run.procs.is_main:
        lifecycle.swap_in(path, placement.final)
        run.reporter.log(f"replaced the earlier run in {placement.final}"
                         + (f"; its evaluations were discarded: {', '.join(placement.discarded)}"
                            if placement.discarded else ""))
