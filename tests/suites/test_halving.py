"""Successive halving as a suite's search strategy (fairbench.suites.halving): rungs ranked on validation,
promoted trials resumed, less compute than random search over the same trials."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fairbench.config import ConfigError
from fairbench.suites.halving import epochs_at, rung_shares
from fairbench.suites.launchers.suite_run import run_suite
from fairbench.runs.record import RunRecord
from fairbench.selection_rules import check_ranking_rule as check_rule
from fairbench.suites.suite import Suite

SUITE = """
[suite]
name = "{name}"
seeds = [0]

[base]
method = "erm"
data.image_size = 32
data.options = {{ n_train = 128, n_val = 64, n_test = 64 }}
train.epochs = 4
train.device = "cpu"
train.workers = 0

[search]
trials = 4
seed = 0
{strategy}

[report]
layouts = ["summary"]
"""
HALVING = 'strategy = "halving"\neta = 2\nmin_budget = 0.25\nrule = "accuracy"'


def write(tmp_path: Path, name: str, strategy: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SUITE.format(name=name, strategy=strategy))
    return path


def test_rungs_grow_by_eta_up_to_the_whole_budget():
    assert rung_shares(3, None) == pytest.approx([1 / 9, 1 / 3, 1.0])
    assert rung_shares(2, 0.25) == [0.25, 0.5, 1.0]
    assert [epochs_at(s, 12) for s in rung_shares(3, None)] == [2, 4, 12]
    assert epochs_at(0.01, 5) == 1


@pytest.mark.parametrize("rule", ["last", "no_such_rule"])
def test_a_rule_that_cannot_rank_trials_on_validation_is_refused(tmp_path: Path, rule: str):
    with pytest.raises(ValueError):
        check_rule(rule)
    path = write(tmp_path, "bad", HALVING.replace('rule = "accuracy"', f'rule = "{rule}"'))
    with pytest.raises(ConfigError, match="rule"):
        Suite.load(path)


def test_halving_refuses_validation_every_n_epochs(tmp_path: Path):
    path = tmp_path / "every.toml"
    path.write_text(SUITE.format(name="every", strategy=HALVING).replace("train.workers = 0",
                                                                        "train.workers = 0\ntrain.validate_every = 2"))
    with pytest.raises(ConfigError, match="validate_every"):
        Suite.load(path).jobs()
    random = tmp_path / "random.toml"
    random.write_text(path.read_text().replace(HALVING, ""))
    assert len(Suite.load(random).jobs()) == 4  # random search validates what it likes


def best_val_accuracy(run: Path, epochs: int) -> float:
    history = json.loads((run / "history.json").read_text())
    return max(h["val"]["accuracy"] for h in history if h["epoch"] < epochs)


def steps(run: Path) -> int:
    return json.loads((run / "history.json").read_text())[-1]["cost"]["optimizer_steps"]


@pytest.mark.slow
def test_halving_promotes_the_best_on_validation_and_spends_less_than_random_search(tmp_path: Path):
    halving, random = write(tmp_path, "halving", HALVING), write(tmp_path, "random", "")
    runs_h, runs_r = tmp_path / "runs-halving", tmp_path / "runs-random"
    result = run_suite(Suite.load(halving), runs_h, quiet=True)
    assert not result.failed and sorted(result.ran) == [1, 2, 3, 4]
    run_suite(Suite.load(random), runs_r, quiet=True)
    jobs = Suite.load(halving).resolve()
    assert [j.trial for j in jobs] == [0, 1, 2, 3] and len({j.family for j in jobs}) == 1
    runs = {j.trial: runs_h / j.run_id for j in jobs}

    # rung 1: every trial trained 1 of its 4 epochs; the best 2 on validation went on (ties: lower trial)
    first = sorted(runs, key=lambda t: (-best_val_accuracy(runs[t], 1), t))[:2]
    # rung 2: those 2 at 2 epochs; the better one trained in full
    (winner,) = sorted(first, key=lambda t: (-best_val_accuracy(runs[t], 2), t))[:1]
    trained = {t: len(json.loads((run / "history.json").read_text())) for t, run in runs.items()}
    assert trained == {t: 4 if t == winner else 2 if t in first else 1 for t in runs}
    states = {t: RunRecord(run).status for t, run in runs.items()}
    assert states[winner]["state"] == "done"
    assert all(s["state"] == "incomplete" and s.get("paused") for t, s in states.items() if t != winner)
    decisions = json.loads((runs_h / "suite-halving" / "halving.json").read_text())
    assert [len(r["kept"]) for r in decisions["rungs"]] == [2, 1, 1]
    assert decisions["rungs"][1]["kept"] == [runs[winner].name]

    # the winner resumed across rungs: its record is the uninterrupted run random search made
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(pd.read_csv(runs[winner] / f"predictions_{split}.csv"),
                                      pd.read_csv(runs_r / runs[winner].name / f"predictions_{split}.csv"))
    # compute: every trial's optimizer steps, halving against random search's full trials
    spent_h = sum(steps(run) for run in runs.values())
    spent_r = sum(steps(runs_r / run.name) for run in runs.values())
    assert spent_h < spent_r
    assert spent_r == sum(4 * steps(run) // trained[t] for t, run in runs.items())  # each trial's epochs, in full

    # a second `suite run` replays the rungs from the histories and trains nothing more
    again = run_suite(Suite.load(halving), runs_h, quiet=True)
    assert not again.failed
    assert {t: len(json.loads((run / "history.json").read_text())) for t, run in runs.items()} == trained
