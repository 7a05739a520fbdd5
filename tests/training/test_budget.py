"""Budgets in optimizer steps or training FLOPs: the same compute for every method."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fairbench.config import ConfigError
from fairbench.cost import BudgetError
from fairbench.training.run import execute
from tests.conftest import tiny_config

N_BATCHES = 256 // 32  # tiny_config: 256 training images, batch 32


def _budget_config(method: str, **train):
    return tiny_config(method, epochs=None, **{f"train.{k}": v for k, v in train.items()})


def test_a_step_budget_trains_the_whole_epochs_that_fit_and_equals_the_run_given_them(tmp_path):
    budgeted = execute(_budget_config("erm", budget_steps=3 * N_BATCHES + 5), tmp_path / "a")
    metrics = json.loads((budgeted / "metrics.json").read_text())
    per_update = metrics["budget"].pop("per_update")
    assert metrics["budget"] == {"key": "budget_steps", "amount": 3 * N_BATCHES + 5, "epochs": 3,
                                 "per_epoch": N_BATCHES, "used": 3 * N_BATCHES}
    assert per_update["optimizer_steps"] == 1 and per_update["train_flops"] > 0
    assert json.loads((budgeted / "config.json").read_text())["train"]["epochs"] == 3
    direct = execute(tiny_config("erm", epochs=3), tmp_path / "b")
    assert direct.name != budgeted.name  # a budget is its own setting
    pd.testing.assert_frame_equal(pd.read_csv(budgeted / "predictions_test.csv"),
                                  pd.read_csv(direct / "predictions_test.csv"))


def test_fineface_pays_for_its_extra_steps(tmp_path):
    path = execute(_budget_config("fineface", budget_steps=10 * N_BATCHES), tmp_path)
    metrics = json.loads((path / "metrics.json").read_text())
    steps_per_update = json.loads((path / "config.json").read_text())["hparams"]["num_experts"] + 2
    assert metrics["budget"]["per_update"]["optimizer_steps"] == steps_per_update
    assert metrics["budget"]["epochs"] == 10 // steps_per_update
    assert metrics["cost"]["optimizer_steps"] <= 10 * N_BATCHES


def test_a_flop_budget_uses_the_measured_flops(tmp_path):
    probe = execute(tiny_config("erm", epochs=1), tmp_path / "probe")
    per_epoch = json.loads((probe / "metrics.json").read_text())["cost"]["train_flops"]
    path = execute(_budget_config("erm", budget_flops=2.5 * per_epoch), tmp_path / "run")
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["budget"]["epochs"] == 2 and metrics["budget"]["per_epoch"] == pytest.approx(per_epoch)
    assert metrics["budget"]["used"] == pytest.approx(2 * per_epoch)


def test_a_flop_budget_pays_for_jtts_identification_pass_in_advance(tmp_path):
    jtt = {"hparams.identification_epochs": 1}
    direct = execute(tiny_config("jtt", epochs=3, **jtt), tmp_path / "direct")
    cost = json.loads((direct / "metrics.json").read_text())["cost"]
    pass_flops = cost["between_epoch_flops"]
    assert pass_flops > 0
    # the FLOPs of 3 epochs' updates plus half the pass: 3 epochs would overspend, so 2 fit
    updates_flops = cost["train_flops"] - pass_flops
    short = execute(tiny_config("jtt", epochs=None, **jtt, **{"train.budget_flops": updates_flops + pass_flops / 2}),
                    tmp_path / "short")
    metrics = json.loads((short / "metrics.json").read_text())
    assert metrics["budget"]["epochs"] == 2
    assert metrics["budget"]["training_set_pass_flops"] == pytest.approx(pass_flops, rel=1e-6)
    assert metrics["cost"]["train_flops"] <= metrics["budget"]["amount"]
    exact = execute(tiny_config("jtt", epochs=None, **jtt, **{"train.budget_flops": cost["train_flops"] * 1.0001}),
                    tmp_path / "exact")
    assert json.loads((exact / "metrics.json").read_text())["budget"]["epochs"] == 3


def test_budgets_that_cannot_be_met_are_errors_before_anything_is_written(tmp_path):
    with pytest.raises(BudgetError, match=r"train.budget_steps=3 is less than one epoch of erm \(8 optimizer steps "
                                          r"per epoch: 8 batches\); raise train.budget_steps to at least 8"):
        execute(_budget_config("erm", budget_steps=3), tmp_path)
    # JTT's identification phase (1 epoch) leaves no selectable epoch in a 1-epoch budget
    with pytest.raises(BudgetError, match=r"train.budget_steps=12 gives jtt 1 epoch\(s\), which it cannot use: "
                                          r"jtt needs more epochs"):
        execute(_budget_config("jtt", budget_steps=12), tmp_path)
    assert not any(p for p in tmp_path.iterdir() if not p.name.startswith("."))


def test_epochs_and_budgets_exclude_each_other():
    with pytest.raises(ConfigError, match="set one of train.epochs, train.budget_steps, train.budget_flops, not "
                                          "epochs and budget_steps"):
        tiny_config("erm", epochs=2, **{"train.budget_steps": 100})
    with pytest.raises(ConfigError, match="not budget_steps and budget_flops"):
        _budget_config("erm", budget_steps=100, budget_flops=1e9)
    with pytest.raises(ConfigError, match="budget_steps"):
        _budget_config("erm", budget_steps=0)


def test_the_constant_control_meets_any_budget_with_one_epoch_and_spends_nothing(tmp_path):
    """It sits in budgeted suites beside the methods it is the floor for (it trains nothing)."""
    path = execute(_budget_config("constant", budget_flops=1e12), tmp_path)
    metrics = json.loads((path / "metrics.json").read_text())
    assert (metrics["budget"]["epochs"], metrics["budget"]["per_epoch"], metrics["budget"]["used"]) == (1, 0.0, 0)
    assert metrics["cost"]["optimizer_steps"] == 0
