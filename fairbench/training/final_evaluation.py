"""After training: test predicted once with the checkpoint the run's rule chose on validation, and
once more for each other validation rule whose chosen epoch differs; then ``metrics.json``
assembled from them (selection, val / test reports, seeds, cost, budget, rules, timing).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from fairbench import distributed
from fairbench.cost import BUDGET_FIELDS
from fairbench.evaluation import predict
from fairbench.runs.checkpoint import checkpoint_file, load_checkpoint
from fairbench.runs.record import RunRecord
from fairbench.training.rule_checkpoints import predictions_split

if TYPE_CHECKING:
    from fairbench.training.epochs import EpochLoop
    from fairbench.training.run_state import RunState


def _predict_test(run: "RunState") -> pd.DataFrame:
    cfg, bundle, test = run.cfg, run.bundle, run.bundle.splits["test"]
    logits = predict.predict_images(run.method, test.images, cfg.train.eval_batch_size, run.device, cfg.train.amp)
    return predict.predictions_frame(test, logits, bundle.task.protected, bundle.classes)


def _load_weights(run: "RunState", state: Any) -> None:
    """Rank 0 loads ``state()``; the other ranks get its weights."""
    if run.procs.is_main:
        run.method.load_state_dict(state()["model"])
    if run.procs.active:
        distributed.broadcast_state(run.method)


def _rules_tested(run: "RunState", loop: "EpochLoop", own: dict[str, Any], val_report: dict[str, Any],
                  test_report: dict[str, Any]) -> dict[str, Any]:
    """Every rule's epoch: test predicted once per epoch other than the run's own (each chosen on
    validation during training). ``{rule: {"epoch" (from 1), "score", "train_flops", "val", "test", "predictions"}}``."""
    path = run.placement.path
    tested = {own["epoch"]: (test_report, "predictions_test.csv")}
    by_rule = {} if not loop.rules.active else {run.cfg.selection: {**own, "report": val_report}, **loop.rules.bests}
    for name, chosen in by_rule.items():
        at = chosen["epoch"]
        if at is None:
            continue
        if at not in tested:
            _load_weights(run, lambda: load_checkpoint(path / checkpoint_file(at), run.device, "refusing to predict from",
                                                       "delete it and train the run again (its command with --force)"))
            frame = _predict_test(run)
            run.writer.write_predictions(predictions_split(at), frame)
            tested[at] = (predict.report_for(frame, run.bundle.group_names), f"predictions_{predictions_split(at)}.csv")
        spent = next((h.get("cost", {}).get("train_flops") for h in loop.history if h["epoch"] == at), None)
        by_rule[name] = {"epoch": at + 1, "score": chosen["score"], "train_flops": spent,
                         "val": chosen["report"], "test": tested[at][0], "predictions": tested[at][1]}
    return by_rule


def evaluate_chosen(run: "RunState", loop: "EpochLoop") -> dict[str, Any]:
    """Predict test with the chosen checkpoint(s); the run's ``metrics.json``."""
    run.clock.enter("test")
    own, path = loop.chosen, run.placement.path
    if own["epoch"] is None:
        raise RuntimeError("no epoch was selectable; check the method's phases and --epochs")
    _load_weights(run, lambda: torch.load(path / "checkpoint.pt", map_location=run.device, weights_only=True))
    test_frame = _predict_test(run)
    run.writer.write_predictions("test", test_frame)
    val_report = own["report"] if own["report"] is not None else distributed.on_main(  # an older last.pt
        lambda: predict.report_for(RunRecord(path).predictions("val"), run.bundle.group_names), run.procs)
    test_report = predict.report_for(test_frame, run.bundle.group_names)
    by_rule = _rules_tested(run, loop, own, val_report, test_report)
    metrics = {
        # counted from 1, as the log and the tables count (runs.record.selected_epoch reads older records)
        "selection": {"rule": run.cfg.selection, "selected_epoch": own["epoch"] + 1, "score": own["score"]},
        "val": val_report,
        "test": test_report,
        "seeds": run.seeds,
        "wall_time_s": time.time() - run.t0,
        "cost": {**loop.meter.cost.to_json(), "processes": run.procs.world_size},
    }
    run.clock.enter("writing")
    if run.budget is not None:
        run.budget["used"] = getattr(loop.meter.cost, BUDGET_FIELDS[run.budget["key"]])
        metrics["budget"] = run.budget
    if loop.rules.active:
        metrics["rules"] = by_rule  # fairbench.training.rule_checkpoints; epochs counted from 1
    metrics["timing"] = run.clock.breakdown()  # fairbench.training.timing: up to this write, which takes milliseconds
    if loop.resumed_at_epoch is not None:  # the breakdown is this attempt's; cost.train_seconds counts every attempt's
        metrics["timing"]["resumed_at_epoch"] = loop.resumed_at_epoch
    return metrics
