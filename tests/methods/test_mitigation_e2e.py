"""Every bias-mitigation method trains through the runner and writes valid predictions.

Also checks the runner's contract on demographic labels: a method that declares
``uses_train_groups = False`` (JTT) never sees a group label in its batches.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fairbench import registry
from fairbench.evaluation.trained_model import load_trained_method
from fairbench.runs.record import RunRecord

CASES = {
    "reweighting": {},
    "group_balanced": {},
    "groupdro": {},
    "domain_independent": {},
    "domain_discriminative": {"hparams": {"prior_shift": True}},
    "jtt": {"hparams": {"identification_epochs": 1}, "epochs": 2},
}


@pytest.mark.parametrize("name", list(CASES))
def test_method_trains_and_writes_valid_predictions(name, run_tiny, monkeypatch):
    cls = registry.methods.get(name)
    seen_groups, seen_ctx_groups = [], []
    original = cls.update

    def recording_update(self, batch):
        seen_groups.append(batch.group is not None and batch.attributes is not None)
        seen_ctx_groups.append(self.ctx.train_groups is not None)
        return original(self, batch)

    monkeypatch.setattr(cls, "update", recording_update)
    path = run_tiny(name, **CASES[name])

    record = RunRecord(path)
    assert record.status["state"] == "done"
    classes = json.loads((path / "dataset.json").read_text())["classes"]
    test = pd.read_csv(path / "predictions_test.csv")
    assert len(test) > 0 and test["pred"].between(0, len(classes) - 1).all()
    assert pd.api.types.is_integer_dtype(test["pred"])
    metrics = record.metrics()
    assert metrics["test"]["accuracy"] == pytest.approx(100.0 * (test["pred"] == test["target"]).mean())  # percent
    assert metrics["selection"]["rule"] == cls.default_selection

    # demographic labels reach the method only if it declares it reads them
    assert seen_groups and set(seen_groups) == {cls.uses_train_groups}
    assert set(seen_ctx_groups) == {cls.uses_train_groups}

    if name == "jtt":  # phase 1 (identification) is never selected
        history = json.loads((path / "history.json").read_text())
        assert [h["selectable"] for h in history] == [False, True]
        assert metrics["selection"]["selected_epoch"] == 2  # the second epoch, counted from 1

    method, _ = load_trained_method(path, "cpu")  # the selected checkpoint rebuilds from the record
    assert type(method) is cls

