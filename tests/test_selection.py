"""Selection rules are registered objects: one rule per table, pluggable, test oracle refused for runs."""

from __future__ import annotations

import json

import pytest

from fairbench import registry
from fairbench.config import ConfigError
from fairbench.methods.base import needs_label
from fairbench.run_store import RunRecord
from fairbench.selection import SelectionRule, checkpoint_rules, get_rule, register_selection_rule
from tests.conftest import tiny_config


def test_builtin_rules_and_what_they_read():
    assert checkpoint_rules() == ["accuracy", "last", "worst_group_accuracy"]
    assert not get_rule("accuracy").reads_val_groups
    assert get_rule("worst_group_accuracy").reads_val_groups and "(+V)" in get_rule("worst_group_accuracy").title
    oracle = get_rule("test_oracle")
    assert oracle.is_oracle and oracle.split == "test" and "upper bound" in oracle.title


def test_scores():
    report = {"accuracy": 90.0, "worst_group_accuracy": 70.0}
    assert get_rule("accuracy").score(report, 3) == 90.0
    assert get_rule("worst_group_accuracy").score(report, 3) == 70.0
    assert get_rule("last").score(report, 3) == 3.0
    assert get_rule("worst_group_accuracy").score({"worst_group_accuracy": float("nan")}, 0) == float("-inf")


def test_needs_marks_validation_group_labels():
    jtt = registry.methods.get("jtt")
    assert needs_label(jtt, "worst_group_accuracy") == "T, +V"
    assert needs_label(jtt, "accuracy") == "T"
    assert needs_label(registry.methods.get("groupdro"), "worst_group_accuracy") == "T+A"


def test_unknown_and_oracle_rules_are_config_errors():
    with pytest.raises(ConfigError, match=r"selection: unknown rule 'best'; valid: accuracy, last, worst_group_accuracy"):
        tiny_config("erm", selection="best")
    with pytest.raises(ConfigError, match="'test_oracle' reads test labels, so a run cannot select its checkpoint"):
        tiny_config("erm", selection="test_oracle")


def test_a_plugin_rule_selects_a_runs_checkpoint(run_tiny, monkeypatch):
    @register_selection_rule("fairest_val")
    class FairestOnValidation(SelectionRule):
        title = "selected by the lowest validation DoB"
        reads_val_groups = True

        @classmethod
        def score(cls, report, epoch):
            return -report["dob"]

    try:
        path = run_tiny("erm", epochs=2, selection="fairest_val")
        metrics = RunRecord(path).metrics()
        assert metrics["selection"]["rule"] == "fairest_val"
        history = {h["epoch"]: h for h in json.loads((path / "history.json").read_text())}
        chosen = metrics["selection"]["epoch"]
        assert metrics["selection"]["score"] == pytest.approx(-history[chosen]["val"]["dob"])
        assert metrics["selection"]["score"] == max(-h["val"]["dob"] for h in history.values())
    finally:
        registry.selection_rules._entries.pop("fairest_val", None)
