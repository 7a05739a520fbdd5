"""Selection rules are registered objects: one rule per table, pluggable, test oracle refused for runs."""

from __future__ import annotations

import json

import pytest

from fairbench import registry
from fairbench.config import ConfigError
from fairbench.methods.base import needs_label
from fairbench.runs.record import RunRecord
from fairbench.selection_rules import SelectionRule, checkpoint_rules, get_rule, register_selection_rule
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
        chosen = metrics["selection"]["selected_epoch"] - 1  # history counts from 0
        assert metrics["selection"]["score"] == pytest.approx(-history[chosen]["val"]["dob"])
        assert metrics["selection"]["score"] == max(-h["val"]["dob"] for h in history.values())
    finally:
        registry.selection_rules._entries.pop("fairest_val", None)


def test_ties_prefer_the_cheaper_model_then_the_lower_trial():
    from fairbench.selection_rules import preference

    candidates = {"dear": preference(80.0, 2e9, 0, "z"), "cheap": preference(80.0, 1e9, 3, "y"),
                  "better": preference(80.5, 9e9, 5, "x"), "unknown_cost": preference(80.0, None, 0, "a"),
                  "trial1": preference(80.0, 1e9, 1, "zz"), "undefined": preference(float("nan"), 0.0, 0, "b")}
    assert sorted(candidates, key=candidates.get) == ["better", "trial1", "cheap", "dear", "unknown_cost", "undefined"]


def test_a_rules_standard_error_is_binomial_over_the_samples_it_counts():
    report = {"n": 400, "accuracy": 90.0, "group_accuracy": {"a": 95.0, "b": 80.0},
              "group_support": {"a": {"n": 300}, "b": {"n": 100}}}
    assert get_rule("accuracy").standard_error(report) == pytest.approx(100 * (0.9 * 0.1 / 400) ** 0.5)
    assert get_rule("worst_group_accuracy").standard_error(report) == pytest.approx(4.0)  # group b: 80 % of 100
    assert get_rule("last").standard_error(report) != get_rule("last").standard_error(report)  # NaN: no score noise


def test_a_run_keeps_every_validation_rules_epoch_and_predicts_test_once_per_other_epoch(run_tiny):
    import pandas as pd

    from fairbench.evaluation.predict import report_for

    path = run_tiny("erm", epochs=3, selection="last", **{"train.threads": 1})
    metrics = RunRecord(path).metrics()
    history = json.loads((path / "history.json").read_text())
    rules = metrics["rules"]
    assert set(rules) == {"accuracy", "last", "worst_group_accuracy"}
    assert rules["last"]["epoch"] == 3 and rules["last"]["predictions"] == "predictions_test.csv"
    for name in ("accuracy", "worst_group_accuracy"):
        scores = [h["val"][name] for h in history]
        # counted from 1; ties keep the earlier epoch
        assert rules[name]["epoch"] == scores.index(max(scores)) + 1
        assert rules[name]["val"][name] == pytest.approx(max(scores))
        expected = "predictions_test.csv" if rules[name]["epoch"] == 3 else f"predictions_test-epoch{rules[name]['epoch']}.csv"
        assert rules[name]["predictions"] == expected
        frame = pd.read_csv(path / expected, keep_default_na=False)
        assert rules[name]["test"]["accuracy"] == pytest.approx(report_for(frame)["accuracy"])
        assert rules[name]["train_flops"] == history[rules[name]["epoch"] - 1]["cost"]["train_flops"]
    epochs = {r["epoch"] for r in rules.values()}
    assert len(list(path.glob("predictions_test*.csv"))) == len(epochs)  # one test prediction per epoch
    assert not list(path.glob("checkpoint-epoch*.pt")) and (path / "checkpoint.pt").is_file()
    assert metrics["selection"]["rule"] == "last"  # the run's own rule and checkpoint, as before


def test_a_resumed_run_started_before_rules_were_followed_follows_none():
    from fairbench.training.rule_checkpoints import RuleBests

    assert not RuleBests("last", None, resumed=True).active  # its earlier epochs were never scored
    fresh = RuleBests("last", None, resumed=False)
    assert fresh.active and set(fresh.bests) == {"accuracy", "worst_group_accuracy"}
    assert fresh.observe(0, {"accuracy": 50.0, "worst_group_accuracy": 10.0}, True)
    assert not fresh.observe(1, {"accuracy": 50.0, "worst_group_accuracy": 5.0}, True)  # a tie keeps epoch 0
    assert not fresh.observe(2, {"accuracy": 90.0, "worst_group_accuracy": 90.0}, False)  # not selectable
    again = RuleBests("last", fresh.state(), resumed=True)
    assert again.active and again.epochs() == {0}
