"""Contracts every registered method keeps, checked over the whole registry (as timm's and
DomainBed's tests do), so a new method is covered the moment it is registered.

Each method, through the real runner on a tiny built-in benchmark:
- trains and writes valid predictions, selected by its declared rule;
- sees demographic labels in training only if it declares ``uses_train_groups``, and refuses a
  context without the ones it declares;
- rebuilds from its record (state round trip) and predicts what it stored;
- resumes after a crash between epochs and ends exactly where an uninterrupted run ends;
- has every forward / backward FLOP it does in training counted by the cost meter.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from torch.utils.flop_counter import FlopCounterMode

from fairbench import registry
from fairbench.evaluation import predict
from fairbench.evaluation.predict import predict_images
from fairbench.evaluation.run_data import load_bundle
from fairbench.evaluation.trained_model import load_trained_method
from fairbench.runs.record import RunRecord
from fairbench.training.epochs import TrainSplitPredictor
from fairbench.training.run import execute
from tests.conftest import crash_then_resume, tiny_config

METHODS = sorted(registry.methods.names())
EPOCHS = 2  # JTT's identification phase (1 epoch by default) needs a second epoch


def _config(method: str):
    return tiny_config(method, epochs=EPOCHS, **{"data.options": {"n_train": 128, "n_val": 64, "n_test": 64}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[dict, Path]:
    """One uninterrupted run per method (trained on first use), shared by the contracts below."""
    return {}, tmp_path_factory.mktemp("contracts")


def _train(method: str, trained) -> tuple[type, Path, list[tuple[bool, bool]]]:
    """The method's class, its run folder, and (groups in batch, groups in context) per update."""
    cache, root = trained
    if method not in cache:
        cls = registry.methods.get(method)
        seen: list[tuple[bool, bool]] = []
        original = cls.update

        def recording_update(self, batch):
            seen.append((batch.group is not None or batch.attributes is not None, self.ctx.train_groups is not None))
            return original(self, batch)

        cls.update = recording_update
        try:
            with _counting_flops() as flops:
                path = execute(_config(method), root / "runs")
        finally:
            cls.update = original
        cache[method] = (cls, path, seen, flops)
    return cache[method][:3]


@contextlib.contextmanager
def _counting_flops():
    """Every FLOP of a run, and those of its evaluations (validation and test predictions, not
    training): ``{"all": F, "evaluation": F}``, filled when the block ends."""
    flops = {"evaluation": 0.0}
    original_predict, original_predict_train = predict.predict_images, TrainSplitPredictor.predict_train
    in_training = []

    def predict_train(self):  # a method's own pass over the training split is training
        in_training.append(True)
        try:
            return original_predict_train(self)
        finally:
            in_training.pop()

    def predict_images(*args, **kwargs):
        if in_training:
            return original_predict(*args, **kwargs)
        with FlopCounterMode(display=False) as evaluation:
            out = original_predict(*args, **kwargs)
        flops["evaluation"] += evaluation.get_total_flops()
        return out

    predict.predict_images, TrainSplitPredictor.predict_train = predict_images, predict_train
    try:
        with FlopCounterMode(display=False) as everything:
            yield flops
        flops["all"] = float(everything.get_total_flops())
    finally:
        predict.predict_images, TrainSplitPredictor.predict_train = original_predict, original_predict_train


@pytest.mark.parametrize("method", METHODS)
def test_trains_selects_and_writes_valid_predictions(method, trained):
    cls, path, _ = _train(method, trained)
    record = RunRecord(path)
    assert record.status["state"] == "done"
    classes = json.loads((path / "dataset.json").read_text())["classes"]
    test = pd.read_csv(path / "predictions_test.csv")
    assert len(test) == 64 and test["pred"].between(0, len(classes) - 1).all()
    metrics = record.metrics()
    assert metrics["selection"]["rule"] == cls.default_selection
    assert metrics["test"]["accuracy"] == pytest.approx(100.0 * (test["pred"] == test["target"]).mean())


@pytest.mark.parametrize("method", METHODS)
def test_group_labels_reach_only_methods_that_declare_them(method, trained):
    cls, _, seen = _train(method, trained)
    assert seen, f"{method}: update was never called"
    assert set(seen) == {(cls.uses_train_groups, cls.uses_train_groups)}


@pytest.mark.parametrize("method", METHODS)
def test_a_method_that_reads_group_labels_refuses_a_context_without_them(method):
    """Checked once, by the method contract, from what the method declares (``uses_train_groups``,
    ``train_labels``), with one message."""
    from tests.kit import tiny_context

    cls = registry.methods.get(method)
    if not cls.uses_train_groups:
        return
    kind = "group" if "groups" in cls.train_labels else "attribute"
    with pytest.raises(ValueError, match=rf"^{method} needs the training {kind} labels \(uses_train_groups\)$"):
        cls(tiny_context(with_groups=False), cls.Hparams())


@pytest.mark.parametrize("method", METHODS)
def test_rebuilds_from_its_record_and_predicts_what_it_stored(method, trained):
    cls, path, _ = _train(method, trained)
    rebuilt, cfg = load_trained_method(path, "cpu")
    assert type(rebuilt) is cls
    test = load_bundle(cfg).splits["test"]
    logits = predict_images(rebuilt, test.images, cfg.train.eval_batch_size, torch.device("cpu"), amp=False)
    stored = pd.read_csv(path / "predictions_test.csv")["pred"].to_numpy()
    assert (logits.argmax(1) == stored).all()


@pytest.mark.parametrize("method", METHODS)
def test_resumes_after_a_crash_and_ends_where_an_uninterrupted_run_ends(method, trained, tmp_path, monkeypatch):
    _, path, _ = _train(method, trained)
    resumed = crash_then_resume(_config(method), tmp_path, monkeypatch)
    assert resumed.name == path.name  # same configuration, same run id
    history = json.loads((resumed / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    a = pd.read_csv(path / "predictions_test.csv")
    b = pd.read_csv(resumed / "predictions_test.csv")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_the_cost_meter_counts_every_training_flop(method, trained):
    """Forward / backward work outside ``update`` (JTT's identification pass) is training compute:
    what the whole run did, less its evaluations, is what metrics.json reports."""
    _, path, _ = _train(method, trained)
    flops = trained[0][method][3]
    cost = RunRecord(path).metrics()["cost"]
    assert cost["train_flops"] == pytest.approx(flops["all"] - flops["evaluation"], rel=1e-9)
