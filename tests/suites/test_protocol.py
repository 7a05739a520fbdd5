"""The comparison protocol: random-search trials in suites, one selection rule per table,
paired differences against ERM, the noise floor, the cost column."""

from __future__ import annotations

import json

import pytest

from fairbench.cli import main
from fairbench.config import ConfigError
from fairbench.results.layouts.protocol import chosen_trials, protocol_rows
from fairbench.runs.catalog import finished, load_records
from fairbench.suites.suite import Suite

SUITE = """
[suite]
name = "protocol-test"
seeds = [0, 1]

[base]
data.name = "synthface"
data.image_size = 32
data.options = {{n_train = 128, n_val = 64, n_test = 64}}
train.epochs = 1
train.batch_size = 32
train.device = "cpu"
train.workers = 0
selection = "last"

[grid]
method = ["erm", "groupdro", "constant"]

[search]
trials = {trials}
seed = 3
methods = ["erm", "groupdro"]

[report]
layouts = ["protocol"]
"""


def _suite(tmp_path, trials: int = 2) -> Suite:
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(trials=trials))
    return Suite.load(path)


def test_search_trials_expand_deterministically(tmp_path):
    jobs = _suite(tmp_path, trials=3).jobs()
    erm = [j for j in jobs if j.method == "erm" and j.seed == 0]
    assert [j.trial for j in erm] == [0, 1, 2]
    assert not any(k.startswith("hparams.") or k == "train.lr" for k in erm[0].spec)  # trial 0: the defaults
    assert {"train.lr", "train.weight_decay", "train.batch_size", "train.backbone_lr"} <= set(erm[1].spec)
    dro = next(j for j in jobs if j.method == "groupdro" and j.trial == 1)
    assert {"hparams.eta", "hparams.generalization_adjustment"} <= set(dro.spec)
    # the same trial draws the same values on every seed and on every load of the file
    again = _suite(tmp_path, trials=3).jobs()
    assert [j.spec for j in again] == [j.spec for j in jobs]
    same_trial = [j for j in jobs if j.method == "erm" and j.trial == 2]
    assert len(same_trial) == 2 and same_trial[0].spec["train.lr"] == same_trial[1].spec["train.lr"]
    assert [j.trial for j in jobs if j.method == "constant"] == [0, 0]  # not searched
    assert "trial 2" in same_trial[0].describe()


def test_a_bad_search_table_names_the_problem(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(trials=0))
    with pytest.raises(ConfigError, match=r"search.trials"):
        Suite.load(path)
    path.write_text(SUITE.format(trials=2).replace('methods = ["erm", "groupdro"]', 'methods = ["erm"]\nlr = 1'))
    with pytest.raises(ConfigError, match="lr"):
        Suite.load(path)


@pytest.fixture(scope="module")
def protocol_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocol")
    path = tmp / "suite.toml"
    path.write_text(SUITE.format(trials=2))
    runs = tmp / "runs"
    assert main(["suite", "run", str(path), "--runs-dir", str(runs), "--quiet"]) == 0
    return path, runs


def test_each_rule_keeps_the_trial_it_scores_best(protocol_runs):
    from fairbench.results.layouts.protocol import candidate

    _, runs = protocol_runs
    done, _ = finished(load_records(runs)[0])
    assert len(done) == 2 * (2 + 2 + 1)
    for rule, split, key in (("accuracy", "val", "accuracy"), ("worst_group_accuracy", "val", "worst_group_accuracy"),
                             ("test_oracle", "test", "worst_group_accuracy")):
        for (_, method, _), seeds in chosen_trials(done, rule).items():
            for seed, chosen in seeds.items():
                trials = [r for r in done if r.method == method and r.seed == seed]
                assert chosen.trials == len(trials) == (1 if method == "constant" else 2)
                kept = getattr(chosen.kept, split)[key]
                assert kept == max(getattr(candidate(r, rule), split)[key] for r in trials)
                assert not chosen.kept.fallback  # the runs kept every rule's epoch


def test_protocol_rows_pair_with_erm_and_carry_floor_and_cost(protocol_runs):
    _, runs = protocol_runs
    done, _ = finished(load_records(runs)[0])
    rows = {r["method"]: r for r in protocol_rows(done, "accuracy")}
    assert rows["erm"]["worst_vs_erm"] == "(baseline)"
    assert "(paired, n=2) rough: fewer than 5 seeds" in rows["groupdro"]["worst_vs_erm"]
    constant = [r.metrics()["test"]["accuracy"] for r in done if r.method == "constant"]
    assert rows["constant"]["accuracy"].startswith(f"{sum(constant) / len(constant):.2f} [")
    assert float(rows["erm"]["dob_floor"]) > 0 and rows["constant"]["dob_floor"] == "0.00"
    assert rows["erm"]["train_flops"].endswith("FLOP") and rows["constant"]["optimizer_steps"] == "0"
    assert rows["groupdro"]["needs"] == "T+A" and rows["erm"]["seeds"] == 2 and rows["erm"]["trials"] == 2


def test_protocol_layout_titles_every_table_with_its_rule(protocol_runs, capsys):
    suite, runs = protocol_runs
    assert main(["compare", "--suite", str(suite), "--runs-dir", str(runs), "--layout", "protocol",
                 "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "## Protocol, selected by validation accuracy" in out
    assert "## Protocol, selected by validation worst-group accuracy (+V)" in out
    assert "## Protocol, test-oracle selection: an upper bound, not a result" in out
    assert "- Rows with fewer than 5 seeds: their intervals are rough." in out
    assert main(["compare", "--suite", str(suite), "--runs-dir", str(runs), "--layout", "protocol",
                 "--format", "json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert [t["rule"] for t in tables] == ["accuracy", "worst_group_accuracy", "test_oracle"]
    rows = {row["method"]: row for row in tables[0]["rows"]}
    assert (rows["erm"]["trials"], rows["groupdro"]["trials"], rows["constant"]["trials"]) == (2, 2, 1)
    assert (runs / "suite-protocol-test" / "table.md").is_file()


def test_a_stored_run_belongs_to_its_own_trial_not_to_trial_0(tmp_path):
    """Trial 0 declares none of the keys its trials draw, so a trial's run also matches trial 0's
    keys; ``compare --suite`` had counted the trials as one job and kept only the newest."""
    from fairbench.config import build_config

    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(trials=3).replace("train.batch_size = 32\n", ""))  # nothing searched is declared
    suite = Suite.load(path)
    for job in suite.jobs():
        stored = build_config(None, job.spec).model_dump(mode="json")
        assert suite.job_for(stored) is job


def test_under_a_budget_the_epochs_it_buys_do_not_split_the_comparison(tmp_path):
    """FineFACE gets fewer epochs than ERM from the same FLOPs: still the same comparison (paired with ERM)."""
    from fairbench.results.layouts.protocol import _protocol_key
    from fairbench.runs.record import RunRecord

    def record(method: str, epochs: int, budget: float | None) -> RunRecord:
        identity = {"method": method, "data.name": "synthface-spurious", "train.seed": 0, "train.epochs": epochs,
                    "train.budget_flops": budget}
        return RunRecord(tmp_path, identity, run_id=method, _config={}, _status={})

    assert _protocol_key(record("erm", 12, 2.3e12)) == _protocol_key(record("fineface", 2, 2.3e12))
    assert _protocol_key(record("erm", 12, None)) != _protocol_key(record("fineface", 2, None))


def test_rows_at_chance_are_flagged_and_so_is_a_comparison_with_an_erm_at_chance():
    from fairbench.results.layouts.protocol import _notes

    row = {"dataset": "d", "seeds": 5, "at_chance": False, "method": "groupdro", "baseline": False}
    notes = _notes([{**row, "method": "erm", "at_chance": True, "baseline": True}, row,
                    {**row, "method": "constant", "at_chance": True}])
    assert "d: erm at chance on every seed (accuracy within 2 pp of a random guess): no skill on this test split, " \
           "whatever their gaps." in notes
    assert any(n.startswith("d: ERM is at chance, so a difference to it says") for n in notes)
    assert not any("erm at chance" in n or "ERM is at chance" in n
                   for n in _notes([row, {**row, "method": "erm", "baseline": True}]))
    # an under-trained ERM beside the baseline is flagged, but the comparison is with the trained one
    notes = _notes([{**row, "method": "erm (budget 1 TFLOP)", "at_chance": True},
                    {**row, "method": "erm (budget 5 TFLOP)", "baseline": True}, row])
    assert any("erm (budget 1 TFLOP) at chance" in n for n in notes) and not any("ERM is at chance" in n for n in notes)


def test_a_pareto_plot_by_rule_has_one_point_per_method(protocol_runs, tmp_path, capsys):
    from fairbench.results.layouts.protocol import chosen_records
    from fairbench.results.plots import plot_pareto

    _, runs = protocol_runs
    done, _ = finished(load_records(runs)[0])
    every_trial = plot_pareto(done, "dob", "accuracy", tmp_path / "all.png")
    by_rule = plot_pareto(chosen_records(done, "accuracy"), "dob", "accuracy", tmp_path / "rule.png",
                          subtitle="search trials selected by validation accuracy")
    assert len(every_trial[0].points) == 2 + 2 + 1  # a point per trial
    assert sorted(p.label for p in by_rule[0].points) == ["constant", "erm", "groupdro"]
    assert all(p.seeds == 2 for p in by_rule[0].points)
    suite, _ = protocol_runs
    assert main(["plot", "pareto", "--suite", str(suite), "--runs-dir", str(runs), "--x", "dob", "--y", "accuracy",
                 "--rule", "worst_group_accuracy", "--output", str(tmp_path / "cli.png")]) == 0
    assert "Pareto front = " in capsys.readouterr().out and (tmp_path / "cli.png").stat().st_size > 0


def test_a_suite_pareto_rule_must_be_a_registered_selection_rule(tmp_path):
    from fairbench.config import ConfigError

    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(trials=2).replace('layouts = ["protocol"]',
                                                   'pareto = [{ x = "dob", y = "accuracy", rule = "best" }]'))
    with pytest.raises(ConfigError, match=r"report.pareto.0.rule: .*unknown selection rule 'best'. Known: accuracy"):
        Suite.load(path)


def test_the_baseline_is_the_erm_given_the_most_compute(tmp_path):
    """ERM run at several budgets (the suite's and 5x): one row each, and every other row is
    paired with the ERM of most compute, never with an under-trained one."""
    from fairbench.results.layouts.protocol import _protocol_key, baseline_variant
    from fairbench.runs.record import RunRecord

    def record(method: str, budget: float) -> RunRecord:
        return RunRecord(tmp_path, {"method": method, "data.name": "d", "train.seed": 0, "train.epochs": int(budget),
                                    "train.budget_flops": budget}, run_id=method, _config={}, _status={})

    runs = [record("erm", 12.0), record("erm", 60.0), record("groupdro", 12.0)]
    assert len({_protocol_key(r) for r in runs}) == 1
    variants = [(_protocol_key(r), r.identity["method"], ("train.budget_flops", r.identity["train.budget_flops"]))
                for r in runs]
    assert baseline_variant(variants, variants[0][0]) == variants[1]
    assert baseline_variant(variants[2:], variants[0][0]) is None


# -- (trial, epoch) selection, ties, statistics: constructed records, no training ------------------

def _report(n: int, accuracy: float, worst: float, worst_n: int) -> dict:
    return {"n": n, "accuracy": accuracy, "worst_group_accuracy": worst,
            "group_accuracy": {"a": worst, "b": 100.0}, "group_support": {"a": {"n": worst_n}, "b": {"n": n - worst_n}}}


def _predictions(path, n_wrong: int, seed: int = 0):
    """64 test images (the same ids for every run: one test split), 2 groups x 2 classes;
    ``n_wrong`` mistakes, spread over the cells."""
    import numpy as np
    import pandas as pd

    target = np.tile([0, 1], 32)
    group = np.repeat(["a", "b"], 32)
    pred = target.copy()
    wrong = np.random.default_rng(seed).choice(64, size=n_wrong, replace=False)
    pred[wrong] = 1 - pred[wrong]
    pd.DataFrame({"index": range(64), "sample_id": range(64), "target": target, "group": group,
                  "pred": pred}).to_csv(path, index=False)


def _record(tmp_path, method: str, seed: int, trial: int | None, rules: dict | None, own_val: dict,
            train_flops: float = 1e9, n_wrong: int = 8, pred_seed: int = 0, name: str | None = None):
    """A finished run whose metrics.json holds ``rules`` ({rule: (epoch, val report, test report)})."""
    from fairbench.evaluation.predict import report_for
    from fairbench.runs.record import RunRecord

    import pandas as pd

    folder = tmp_path / (name or f"{method}-{seed}-{trial}")
    folder.mkdir()
    _predictions(folder / "predictions_test.csv", n_wrong, pred_seed)
    test = report_for(pd.read_csv(folder / "predictions_test.csv", keep_default_na=False))
    metrics = {"selection": {"rule": "last", "epoch": 2}, "val": own_val, "test": test,
               "cost": {"train_flops": train_flops, "optimizer_steps": 10}}
    if rules is not None:
        metrics["rules"] = {name: {"epoch": epoch, "score": None, "train_flops": train_flops * epoch / 3,
                                   "val": val, "test": test, "predictions": "predictions_test.csv"}
                            for name, (epoch, val) in rules.items()}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    config = {"method": method, "train": {"seed": seed}, "data": {"name": "d", "target": "t", "protected": ["g"]},
              "selection": "last"}
    identity = {"method": method, "data.name": "d", "train.seed": seed, "selection": "last",
                "train.lr": 0.1 * (1 + (trial or 0))}
    return RunRecord(folder, identity, trial=trial, _config=config, _status={"state": "done"})


def test_a_rule_keeps_the_trial_at_the_epoch_it_chose_within_the_run(tmp_path):
    from fairbench.results.layouts.protocol import chosen_trials

    # trial 0 at its own (last) epoch has the better validation accuracy, but the rule compares the
    # epochs the accuracy rule chose within each run: trial 1's epoch 2 (90 %) beats trial 0's epoch 3 (85 %)
    t0 = _record(tmp_path, "erm", 0, 0, {"accuracy": (3, _report(100, 85.0, 60.0, 20)),
                                          "last": (3, _report(100, 85.0, 60.0, 20))}, _report(100, 85.0, 60.0, 20))
    t1 = _record(tmp_path, "erm", 0, 1, {"accuracy": (2, _report(100, 90.0, 50.0, 20)),
                                          "last": (3, _report(100, 70.0, 50.0, 20))}, _report(100, 70.0, 50.0, 20))
    (seeds,) = chosen_trials([t0, t1], "accuracy").values()
    kept = seeds[0]
    assert kept.kept.record is t1 and kept.kept.epoch == 2 and kept.trials == 2
    # the standard error of the kept validation accuracy, 90 % of 100 images: 3 pp; runner-up 5 pp behind
    assert kept.standard_error == pytest.approx(3.0) and not kept.close


def test_ties_go_to_the_cheaper_model_then_to_the_lower_trial(tmp_path):
    from fairbench.results.layouts.protocol import chosen_trials

    same = _report(100, 80.0, 60.0, 20)
    rules = {"accuracy": (3, same)}
    # (the run ids are made to disagree with both: ties used to go to the largest run id)
    dear = _record(tmp_path, "erm", 0, 0, rules, same, train_flops=2e9, name="erm-zz")
    cheap = _record(tmp_path, "erm", 0, 2, rules, same, train_flops=1e9, name="erm-aa")
    (chosen,) = chosen_trials([dear, cheap], "accuracy").values()
    assert chosen[0].kept.record is cheap  # equal score: fewer FLOPs wins over the lower trial
    assert chosen[0].close  # a tie is within any standard error
    later = _record(tmp_path, "erm", 1, 3, rules, same)
    earlier = _record(tmp_path, "erm", 1, 1, rules, same)
    chosen = next(iter(chosen_trials([later, earlier], "accuracy").values()))
    assert chosen[1].kept.record is earlier  # equal score and cost: the lower trial, whatever the run ids


def test_runs_recorded_before_rules_fall_back_to_their_own_checkpoint_and_say_so(tmp_path):
    from fairbench.results.layouts.protocol import _notes, protocol_rows

    old = [_record(tmp_path, "erm", s, 0, None, _report(100, 80.0, 60.0, 20), pred_seed=s) for s in range(2)]
    (row,) = protocol_rows(old, "worst_group_accuracy")
    assert row["epoch"] == "3 †" and row["fallback"]  # selection.epoch 2 (from 0) = epoch 3
    assert any(n.startswith("Epoch '†': runs recorded before") for n in _notes([row]))
    # a report older than the worst-cell metric: computed from the stored predictions
    assert row["worst_cell_accuracy"] != "n/a"


def test_intervals_hold_test_sample_noise_and_pairs_share_the_test_images(tmp_path):
    import numpy as np

    from fairbench.results.layouts.protocol import _sample, candidate, protocol_rows
    from fairbench.metrics.resampling import variance_of_mean
    from fairbench.metrics.uncertainty import clipped_t_interval

    val = _report(100, 80.0, 60.0, 20)
    erm = [_record(tmp_path, "erm", s, 0, {"accuracy": (3, val)}, val, n_wrong=10, pred_seed=s) for s in range(3)]
    same = [_record(tmp_path, "groupdro", s, 0, {"accuracy": (3, val)}, val, n_wrong=10, pred_seed=s) for s in range(3)]
    rows = {r["method"]: r for r in protocol_rows(erm + same, "accuracy")}
    # identical predictions on the same test images: the paired difference is exactly 0, no noise left
    assert rows["groupdro"]["worst_vs_erm"].startswith("+0.00 pp [+0.00, +0.00]")
    replicates = [_sample(candidate(r, "accuracy"))[1]["accuracy"] for r in erm]
    noise = variance_of_mean(replicates)
    assert noise > 0 and variance_of_mean(replicates, replicates) == 0.0
    accuracies = [candidate(r, "accuracy").test["accuracy"] for r in erm]
    mean, low, high, _ = clipped_t_interval(accuracies, (0.0, 100.0), sample_variance=noise)
    assert rows["erm"]["accuracy"] == f"{mean:.2f} [{low:.2f}, {high:.2f}]"
    _, seeds_low, seeds_high, _ = clipped_t_interval(accuracies, (0.0, 100.0))
    assert high - low > seeds_high - seeds_low  # wider than the seeds alone
    # the replicates resample one set of indices per test split: the same for every run on it
    assert np.array_equal(_sample(candidate(erm[0], "accuracy"))[1]["accuracy"],
                          _sample(candidate(same[0], "accuracy"))[1]["accuracy"])


def test_beats_erm_only_after_holm_over_the_table(tmp_path):
    from fairbench.results.layouts.protocol import _notes, protocol_rows
    from fairbench.metrics.uncertainty import holm_adjusted

    val = _report(100, 80.0, 60.0, 20)
    runs = []
    for s in range(5):
        runs.append(_record(tmp_path, "erm", s, 0, {"accuracy": (3, val)}, val, n_wrong=24, pred_seed=s))
        runs.append(_record(tmp_path, "groupdro", s, 0, {"accuracy": (3, val)}, val, n_wrong=0, pred_seed=s))
        runs.append(_record(tmp_path, "jtt", s, 0, {"accuracy": (3, val)}, val, n_wrong=23, pred_seed=s + 10))
    rows = protocol_rows(runs, "accuracy")
    by = {r["method"]: r for r in rows}
    assert by["groupdro"]["beats_erm"].startswith("yes") and by["jtt"]["beats_erm"].startswith("no")
    assert by["erm"]["beats_erm"] == ""  # the baseline
    # the p-values shown are the paired tests' raw ones, Holm-adjusted over the two rows
    raw = [by["groupdro"]["p_vs_erm"], by["jtt"]["p_vs_erm"]]
    shown = [float(by[m]["beats_erm"].split("p=")[1].rstrip(")")) for m in ("groupdro", "jtt")]
    assert shown == pytest.approx([round(p, 3) for p in holm_adjusted(raw)], abs=1e-3)
    assert any("Holm-adjusted over the rows of this table" in n for n in _notes(rows))


def test_cross_dataset_rows_follow_each_rules_epoch(tmp_path):
    """A suite with [[evaluate]] keeps every rule's checkpoint; the evaluation predicts with each,
    and a rule that chose an epoch other than the run's own gets that epoch's cross-dataset report."""
    from fairbench import registry
    from fairbench.results.layouts.protocol import as_chosen, candidate
    from fairbench.runs.checkpoint import kept_epochs
    from fairbench.selection_rules import SelectionRule, register_selection_rule

    @register_selection_rule("first_epoch")
    class FirstEpoch(SelectionRule):  # always the first epoch: a rule whose epoch differs from "last"
        title = "the first epoch"

        @classmethod
        def score(cls, report, epoch):
            return -float(epoch)

    try:
        path = tmp_path / "suite.toml"
        path.write_text(SUITE.format(trials=1).replace("seeds = [0, 1]", "seeds = [0]")
                        .replace('method = ["erm", "groupdro", "constant"]', 'method = ["erm"]')
                        .replace("train.epochs = 1", "train.epochs = 3")
                        + '\n[[evaluate]]\ndataset = "synthface"\noptions = { n_test = 64, seed = 7 }\n')
        runs = tmp_path / "runs"
        assert main(["suite", "run", str(path), "--runs-dir", str(runs), "--quiet"]) == 0
        (record,) = finished(load_records(runs)[0])[0]
        assert record.config["train"]["keep_rule_checkpoints"] is True
        assert [epoch for epoch, _ in kept_epochs(record.path)] == [1]  # "first_epoch"'s; "last" is the run's own
        (evaluation,) = record.evaluation_folders()
        by_epoch = json.loads((evaluation / "epoch1" / "metrics.json").read_text())
        assert by_epoch["epoch"] == 1 and by_epoch["report"]["n"] == 64
        first, last = candidate(record, "first_epoch"), candidate(record, "last")
        assert first.epoch == 1 and not first.is_own and last.is_own
        assert as_chosen(first).evaluations()[1].report == by_epoch["report"]
        assert as_chosen(last).evaluations()[1].report == record.evaluations()[1].report
    finally:
        registry.selection_rules._entries.pop("first_epoch", None)
