"""The epoch loop: train every epoch (resuming mid-epoch from ``last.pt``), validate it, keep the
checkpoint the run's rule chooses on validation and the epochs every other validation rule chooses
(:mod:`fairbench.training.rule_checkpoints`), and write ``history.json`` and ``last.pt`` after each.
Test is never looked at here: :mod:`fairbench.training.final_evaluation` predicts it once, afterwards.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fairbench import distributed
from fairbench.compute import autocast
from fairbench.cost import CostMeter, TrainingCost
from fairbench.evaluation import predict
from fairbench.methods.base import Batch, Method
from fairbench.metrics.specs import history_keys
from fairbench.pipeline import BatchStream, augment_uint8, center_crop_view, epoch_batches
from fairbench.runs import checkpoint
from fairbench.runs.checkpoint import checkpoint_file
from fairbench.runs.store import now
from fairbench.selection_rules import get_rule
from fairbench.training.rule_checkpoints import RuleBests

if TYPE_CHECKING:
    from fairbench.training.run_state import RunState

class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite."""


class TrainSplitPredictor:
    """What a method sees of the trainer between epochs (``TrainerView``): predictions on the
    training split, with the evaluation transform (JTT's identification pass, GroupDRO's groups)."""

    def __init__(self, method: Method, run: "RunState"):
        self.method, self.run = method, run

    def predict_train(self) -> np.ndarray:
        cfg = self.run.cfg
        images = center_crop_view(self.run.bundle.splits["train"].images, cfg.data.image_size)  # the eval transform
        logits = predict.predict_images(self.method, images, cfg.train.eval_batch_size, self.run.device, cfg.train.amp)
        self.method.train()
        return logits


class EpochLoop:
    """Trains ``run.method`` for its epochs; afterwards ``history``, ``chosen`` (the checkpoint the run's
    rule chose, with its validation report), ``rules`` and ``meter`` say what happened."""

    def __init__(self, run: "RunState"):
        self.run = run
        cfg, method, device, bundle = run.cfg, run.method, run.device, run.bundle
        self.trainer = TrainSplitPredictor(method, run)
        self.sampler_rng = np.random.default_rng(cfg.train.seed)
        self.aug_gen = torch.Generator().manual_seed(cfg.train.seed)
        train = bundle.splits["train"]
        self.groups_t = torch.from_numpy(bundle.group_codes("train"))
        self.attrs_t = {k: torch.from_numpy(v) for k, v in bundle.attribute_codes("train").items()}
        self.targets_t = torch.from_numpy(train.targets)
        self.stream = BatchStream(train.images, device, prefetch=cfg.train.workers)
        self.position = checkpoint.Position()
        self.resumed_at_epoch: int | None = None
        if run.resume_state is not None:
            self._restore_position()
        self.resume_mid_epoch = self.position.batches is not None
        self.history, self.chosen = self.position.history, self.position.best
        # the best epoch of every other validation rule, its weights kept until test is predicted
        self.rules = RuleBests(cfg.selection, self.position.rule_bests, resumed=run.resume_state is not None)
        # what training costs (steps, images, FLOPs, time, memory), carried over a resume
        self.meter = CostMeter(method, device, TrainingCost.from_json((run.resume_state or {}).get("cost")))
        # each rank trains on its rows of every global batch (augmented with the global batch's draws)
        procs = run.procs
        self.rows = distributed.shard_rows(cfg.train.batch_size, procs) if procs.active else None
        self.averager = distributed.GradientAverager() if procs.active else None

    def _restore_position(self) -> None:
        run, state = self.run, self.run.resume_state
        self.position = checkpoint.restore(state, run.method, self.sampler_rng, self.aug_gen)
        self.resumed_at_epoch = self.position.epoch + 1  # counted from 1; the run's timing covers this attempt only
        run.reporter.log(f"resuming at epoch {self.resumed_at_epoch}, step {self.position.step} "
                         f"({run.placement.path / 'last.pt'})")
        before = state.get("torch_threads")
        if before is not None and run.device.type == "cpu" and before != torch.get_num_threads():
            run.reporter.log(f"note: the interrupted run trained on {before} CPU thread(s), this one on "
                             f"{torch.get_num_threads()}: the result will not be bit for bit the uninterrupted "
                             f"one (other summation orders); --threads {before} resumes exactly")

    def _stop_at(self) -> int | None:
        """A halving search's rung: stop, resumable, after this many epochs (never a --force run's hidden copy)."""
        share = self.run.cfg.train.stop_after_share
        if share is None or share >= 1 or self.run.placement.aside:
            return None
        return max(1, math.ceil(share * self.run.cfg.train.epochs - 1e-9))

    def train(self) -> bool:
        """Every epoch; False when it paused at a halving rung (resumable), True when all ran."""
        run, cfg = self.run, self.run.cfg
        stop_at = self._stop_at()
        n_val = len(run.bundle.splits["val"])
        run.clock.enter("training")
        with self.meter, run.reporter.training(cfg.train.epochs, run.n_batches, n_val) as bar:
            for epoch in range(self.position.epoch, cfg.train.epochs):
                run.epoch = epoch
                if stop_at is not None and epoch >= stop_at and not self.resume_mid_epoch:
                    self._pause(epoch)
                    return False
                train_logs = self._train_epoch(epoch, bar)
                self._end_epoch(epoch, train_logs, bar)
                run.clock.enter("training")
        run.clock.move("training", "flop_counting", self.meter.counting_seconds())
        run.epoch = None
        return True

    def _pause(self, epoch: int) -> None:
        run, share = self.run, self.run.cfg.train.stop_after_share
        run.writer.set_status("incomplete", reason=f"paused after epoch {epoch}/{run.cfg.train.epochs} (a rung of "
                              "a halving search); run it again to resume", epoch=epoch - 1,
                              started=run.env["started"], ended=now(), paused=True)
        run.reporter.log(f"paused after epoch {epoch}/{run.cfg.train.epochs} (train.stop_after_share={share:g})")

    def _begin_epoch(self, epoch: int) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """The epoch's batches, the step to start at and the running loss sums."""
        run, method, procs = self.run, self.run.method, self.run.procs
        run.writer.set_status("running", epoch=epoch, started=run.env["started"])
        method.train()
        weights = self.meter.between_epochs(lambda: method.begin_epoch(epoch, self.trainer))  # JTT's identification pass
        self.meter.begin_epoch()
        method.train()
        if procs.active:
            if run.cfg.train.sync_batchnorm:
                distributed.convert_batchnorm(method)  # again: a method may have built new layers
            distributed.broadcast_state(method)
            self.averager.attach(method.optimizers)  # gradients averaged over the ranks before each step
        if self.resume_mid_epoch:  # begin_epoch replayed; the checkpoint wins over whatever it changed
            self.position = checkpoint.restore(run.resume_state, method, self.sampler_rng, self.aug_gen)
            self.meter.resume_epoch(TrainingCost.from_json(run.resume_state.get("cost")))
            self.resume_mid_epoch = False
            return self.position.batches, self.position.step, self.position.sums
        n_train = len(run.bundle.splits["train"])
        return epoch_batches(n_train, run.cfg.train.batch_size, self.sampler_rng, weights), 0, {}

    def _batch(self, idx: np.ndarray, raw: torch.Tensor) -> Batch:
        cfg, device, rows = self.run.cfg, self.run.device, self.rows
        idx_t = torch.from_numpy(idx)
        x = augment_uint8(raw, cfg.train.crop_padding, self.aug_gen,
                          None if rows is None else (rows, cfg.train.batch_size), size=cfg.data.image_size)
        batch = Batch(x=x, y=self.targets_t[idx_t].to(device), index=idx_t.to(device))
        if self.run.method.uses_train_groups:
            batch.group = self.groups_t[idx_t].to(device)
            batch.attributes = {k: v[idx_t].to(device) for k, v in self.attrs_t.items()}
        return batch

    def _train_epoch(self, epoch: int, bar: Any) -> dict[str, float]:
        """One epoch's updates (from its next step when resuming); the mean of each logged loss."""
        run, cfg, procs = self.run, self.run.cfg, self.run.procs
        batches, first, sums = self._begin_epoch(epoch)
        every = cfg.train.checkpoint_every_steps
        bar.start_epoch(epoch)
        shards = batches[first:] if self.rows is None else [b[self.rows] for b in batches[first:]]
        for step, (idx, raw) in enumerate(self.stream(shards), start=first):
            run.clock.mark("first_batch")
            batch = self._batch(idx, raw)
            with autocast(run.device, cfg.train.amp):
                logs = self.meter.update(lambda: run.method.update(batch), batch.x)
            for k, v in logs.items():
                v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                sums[k] = sums.get(k, 0) + v
            bar.advance_batch(step + 1, sums)  # syncs only when it redraws
            if every and (step + 1) % every == 0 and step + 1 < len(batches):
                if procs.active:  # every rank continues from what the checkpoint holds
                    sums = distributed.average_logs(sums)
                self._save_last(checkpoint.Position(epoch, step + 1, batches, sums, self.history, self.chosen,
                                                    self.rules.state()))
        if procs.active:
            sums = distributed.average_logs(sums)
        train_logs = {k: float(v) / max(1, len(batches)) for k, v in sums.items()}
        diverged = [k for k, v in train_logs.items() if not math.isfinite(v)]
        if diverged:
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + 1}/{cfg.train.epochs}: {diverged[0]} is "
                f"{train_logs[diverged[0]]} (learning rate {cfg.train.lr}); lower it, e.g. "
                f"--set train.lr={cfg.train.lr / 10:g}")
        return train_logs

    def _agree_on_batchnorm(self) -> None:
        """Before evaluations and checkpoints: the ranks' mean statistics."""
        if self.run.procs.active and not self.run.cfg.train.sync_batchnorm:
            distributed.average_batchnorm_statistics(self.run.method)

    def _save_last(self, at: checkpoint.Position) -> None:
        if at.batches is not None:  # mid-epoch; at an epoch's end they were agreed before validation
            self._agree_on_batchnorm()
        self.run.writer.save_checkpoint("last.pt", {
            **checkpoint.training_state(self.run.method, at, self.sampler_rng, self.aug_gen),
            "run_id": self.run.rid, "cost": self.meter.cost.to_json(), "torch_threads": torch.get_num_threads()})

    def _validates(self, epoch: int) -> bool:
        """Whether this epoch is validated: every ``train.validate_every``-th and the last (the
        "last" rule's, and every run's final state, are always scored)."""
        cfg = self.run.cfg
        return (epoch + 1) % cfg.train.validate_every == 0 or epoch + 1 == cfg.train.epochs

    def _end_epoch(self, epoch: int, train_logs: dict[str, float], bar: Any) -> None:
        """Validate (when :meth:`_validates`), record the epoch (``"val": None`` when not validated:
        no rule can choose it), write ``last.pt``."""
        run = self.run
        self._agree_on_batchnorm()
        selectable = run.method.is_selectable_epoch(epoch)
        report = self._validate(epoch, selectable, bar) if self._validates(epoch) else None
        self.history.append({"epoch": epoch, "train": train_logs,
                             "val": None if report is None else {k: report.get(k) for k in history_keys()},
                             "selectable": selectable, "time": now(),
                             "cost": {"optimizer_steps": self.meter.cost.optimizer_steps,
                                      "train_flops": self.meter.cost.train_flops}})
        run.writer.write_json("history.json", self.history)
        self._save_last(checkpoint.Position(epoch, history=self.history, best=self.chosen, rule_bests=self.rules.state()))
        if report is not None and run.procs.is_main:  # after last.pt: the files its rule_bests point at stay until then
            self.rules.prune(run.placement.path)
        bar.end_epoch(epoch, train_logs, report or {}, report is not None and self.chosen["epoch"] == epoch)

    def _validate(self, epoch: int, selectable: bool, bar: Any) -> dict[str, Any]:
        """Predict validation; keep the checkpoints the run's rule and the other rules choose. The report."""
        run, cfg, method, bundle = self.run, self.run.cfg, self.run.method, self.run.bundle
        run.clock.enter("validation")
        val = bundle.splits["val"]
        logits = predict.predict_images(method, val.images, cfg.train.eval_batch_size, run.device, cfg.train.amp,
                                        bar.advance_eval)
        val_frame = predict.predictions_frame(val, logits, bundle.task.protected, bundle.classes)
        val_report = predict.report_for(val_frame, bundle.group_names)
        score = get_rule(cfg.selection).score(val_report, epoch)
        if selectable and (score > self.chosen["score"] or self.chosen["epoch"] is None):
            self.chosen = {"score": score, "epoch": epoch, "report": val_report}
            run.writer.save_checkpoint("checkpoint.pt", {"model": method.state_dict(), "epoch": epoch})
            run.writer.write_predictions("val", val_frame)
        if self.rules.observe(epoch, val_report, selectable):
            run.writer.save_checkpoint(checkpoint_file(epoch), {"model": method.state_dict(), "epoch": epoch})
        return val_report
