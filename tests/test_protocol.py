"""The comparison protocol: random-search trials in suites, one selection rule per table,
paired differences against ERM, the noise floor, the cost column."""

from __future__ import annotations

import json

import pytest

from fairbench.cli import main
from fairbench.config import ConfigError
from fairbench.layouts.protocol import chosen_trials, protocol_rows
from fairbench.records import finished, load_records
from fairbench.suite import Suite

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
    _, runs = protocol_runs
    done, _ = finished(load_records(runs)[0])
    assert len(done) == 2 * (2 + 2 + 1)
    for rule, split, key in (("accuracy", "val", "accuracy"), ("worst_group_accuracy", "val", "worst_group_accuracy"),
                             ("test_oracle", "test", "worst_group_accuracy")):
        for (_, method, _), seeds in chosen_trials(done, rule).items():
            for seed, (kept, n_trials) in seeds.items():
                trials = [r for r in done if r.method == method and r.seed == seed]
                assert n_trials == len(trials) == (1 if method == "constant" else 2)
                assert kept.metrics()[split][key] == max(r.metrics()[split][key] for r in trials)


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
    from fairbench.layouts.protocol import _protocol_key
    from fairbench.records import Record

    def record(method: str, epochs: int, budget: float | None) -> Record:
        identity = {"method": method, "data.name": "synthface-spurious", "train.seed": 0, "train.epochs": epochs,
                    "train.budget_flops": budget}
        return Record(method, tmp_path, {}, {}, identity)

    assert _protocol_key(record("erm", 12, 2.3e12)) == _protocol_key(record("fineface", 2, 2.3e12))
    assert _protocol_key(record("erm", 12, None)) != _protocol_key(record("fineface", 2, None))


def test_rows_at_chance_are_flagged_and_so_is_a_comparison_with_an_erm_at_chance():
    from fairbench.layouts.protocol import _notes

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
    from fairbench.layouts.protocol import chosen_records
    from fairbench.plots import plot_pareto

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
    from fairbench.layouts.protocol import _protocol_key, baseline_variant
    from fairbench.records import Record

    def record(method: str, budget: float) -> Record:
        return Record(method, tmp_path, {}, {}, {"method": method, "data.name": "d", "train.seed": 0,
                                                  "train.epochs": int(budget), "train.budget_flops": budget})

    runs = [record("erm", 12.0), record("erm", 60.0), record("groupdro", 12.0)]
    assert len({_protocol_key(r) for r in runs}) == 1
    variants = [(_protocol_key(r), r.identity["method"], ("train.budget_flops", r.identity["train.budget_flops"]))
                for r in runs]
    assert baseline_variant(variants, variants[0][0]) == variants[1]
    assert baseline_variant(variants[2:], variants[0][0]) is None
