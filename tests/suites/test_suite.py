"""Benchmark suites: grid expansion, run ids, dry run, skip / resume, status, reports (CPU, tiny runs)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fairbench.cli import main
from fairbench.config import ConfigError, run_id
from fairbench.suites.launchers.suite_run import run_suite
from fairbench.runs.job_state import mark_queued
from fairbench.runs.job_state import job_state
from fairbench.runs.lease import hold
from fairbench.runs.record import RunRecord
from fairbench.suites.suite import Suite
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
TINY = """
[suite]
name = "tiny"
seeds = [0, 1]

[base]
method = "erm"
data.image_size = 32
data.options = { n_train = 128, n_val = 64, n_test = 64 }  # 128 training images, drawn at that size
train.epochs = 1
train.batch_size = 32
train.device = "cpu"
train.workers = 0
{extra}
[report]
layouts = ["summary", "groups"]
pareto = [{ x = "dob", y = "accuracy" }]
"""


def write_suite(folder: Path, extra: str = "", name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(TINY.replace("{extra}", extra))
    return path


# -- schema and expansion --------------------------------------------------------------------------

@pytest.mark.parametrize("file, jobs, methods", [("quickstart-8-epochs.toml", 39, 13), ("quickstart-erm-steps.toml", 3, 1),
                                                 ("paper-gender.toml", 15, 5), ("paper-celeba.toml", 234, 6)])
def test_benchmark_suites_expand(file, jobs, methods):
    suite = Suite.load(ROOT / "benchmarks" / file)
    expanded = suite.resolve()
    assert len(expanded) == jobs and not [j.error for j in expanded if j.error]
    assert len({j.method for j in expanded}) == methods
    assert len({j.run_id for j in expanded}) == jobs
    assert [j.seed for j in expanded] == sorted(j.seed for j in expanded)  # seed-major
    if file == "quickstart-8-epochs.toml":  # one epoch budget for every method, FineFACE included
        assert {j.config.train.epochs for j in expanded} == {8}
    if file == "quickstart-erm-steps.toml":  # ERM with FineFACE's optimizer steps: 5 per batch x 8 epochs
        quickstart = {j.seed: j.config for j in Suite.load(ROOT / "benchmarks" / "quickstart-8-epochs.toml").resolve()
                      if j.method == "fineface"}
        for j in expanded:
            twin = quickstart[j.seed]
            assert j.config.train.epochs == 5 * twin.train.epochs
            assert j.config.data == twin.data and j.config.backbone == twin.backbone
    if file.startswith("paper"):
        assert {(j.config.backbone.name, j.config.data.image_size, j.config.train.epochs) for j in expanded} == \
            {("resnet50", 448, 25)}
    if file == "paper-gender.toml":
        assert [e.folder for e in expanded[0].evaluations] == ["utkface-test", "lfwa-test", "celeba-test"]


def test_job_ids_are_the_run_ids_of_fairbench_run(tmp_path):
    """The same configuration built the way `fairbench run` builds it (its data fingerprinted) gets the same id."""
    from fairbench.data.run_fingerprint import with_fingerprint

    suite = Suite.load(write_suite(tmp_path, '[grid]\n"hparams.label_smoothing" = [0.0, 0.1]\n'))
    jobs = suite.resolve()
    assert len(jobs) == 4
    for job in jobs:
        cfg = tiny_config("erm", sets=[f"train.seed={job.seed}", "data.options={n_train = 128, n_val = 64, n_test = 64}"],
                          hparams={"label_smoothing": job.spec["hparams.label_smoothing"]})
        assert job.run_id == run_id(with_fingerprint(cfg))


@pytest.mark.parametrize("file, jobs, trained", [("utkface-cpu.toml", 115, 7), ("utkface-cpu-core.toml", 50, 3)])
def test_utkface_suites_expand(file, jobs, trained):
    """The real-face suites (their data is not needed to expand them): every searched method 3
    trials x 5 seeds at the common budget; FineFACE's extra 30-epoch row at its defaults only."""
    expanded = Suite.load(ROOT / "benchmarks" / file).jobs()
    assert len(expanded) == jobs
    common = [j for j in expanded if j.spec["train.budget_flops"] == 1.96e13 and j.spec["method"] != "constant"]
    assert len(common) == trained * 3 * 5 and {j.trial for j in common} == {0, 1, 2}
    extra = [j for j in expanded if j.spec["train.budget_flops"] != 1.96e13]
    assert all(j.spec["method"] == "fineface" and j.trial == 0 for j in extra) and len(extra) in (0, 5)
    assert len(extra) == (5 if file == "utkface-cpu.toml" else 0)


def test_untuned_jobs_run_the_defaults_only(tmp_path):
    path = write_suite(tmp_path, """
[grid]
method = ["erm", "jtt"]
[per_method.erm.sweep]
"train.epochs" = [1, 2]
[search]
trials = 3
untuned = [{ method = "erm", "train.epochs" = 2 }, { method = "nothing-matches" }]
""")
    jobs = Suite.load(path).jobs()
    trials = {(j.spec["method"], j.spec.get("train.epochs"), j.seed): sorted(k.trial for k in jobs
              if (k.spec["method"], k.spec.get("train.epochs"), k.seed) == (j.spec["method"], j.spec.get("train.epochs"), j.seed))
              for j in jobs}
    assert trials[("erm", 2, 0)] == [0]  # the extra row: the defaults only
    assert trials[("erm", 1, 0)] == [0, 1, 2] and trials[("jtt", 1, 0)] == [0, 1, 2]


def test_a_search_can_draw_from_another_profiles_training_space(tmp_path):
    from fairbench.search_spaces import TRAIN_SPACES

    extra = """
[grid]
method = ["erm"]
[search]
trials = 4
profile = "paper"
"""
    lrs = {j.spec["train.lr"] for j in Suite.load(write_suite(tmp_path, extra)).jobs() if j.trial > 0}
    paper = TRAIN_SPACES["paper"]["lr"]
    assert lrs and all(paper.low <= lr <= paper.high for lr in lrs)  # synthface's own space is 0.005-0.1
    assert any(lr < TRAIN_SPACES["cpu-small"]["lr"].low for lr in lrs)


def test_per_method_keys_and_sweeps(tmp_path):
    path = write_suite(tmp_path, """
[grid]
method = ["erm", "jtt"]
[per_method.jtt]
hparams.identification_epochs = 1
[per_method.jtt.sweep]
hparams.upweight = [20.0, 50.0]
""")
    jobs = Suite.load(path).resolve()
    assert [(j.method, j.spec.get("hparams.upweight")) for j in jobs if j.seed == 0] == \
        [("erm", None), ("jtt", 20.0), ("jtt", 50.0)]
    assert len(jobs) == 6 and all(j.config.hparams["identification_epochs"] == 1 for j in jobs if j.method == "jtt")


@pytest.mark.parametrize("extra, message", [
    ("[grid]\nmethod = \"erm\"\n", "must be a non-empty list"),
    ("[grid]\ntrain.seed = [1, 2]\n", "seeds come from [suite] seeds only"),
    ("[per_method.groupdro]\nhparams.eta = 0.1\n", "names a method no job uses"),
    ("[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
])
def test_schema_errors_are_clear(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Suite.load(write_suite(tmp_path, extra))


def test_a_job_that_does_not_resolve_stops_the_suite_before_training(tmp_path, capsys):
    path = write_suite(tmp_path, '[grid]\nmethod = ["erm", "no_such_method"]\n')
    assert main(["suite", "run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "2 of 4 jobs" in err and "no_such_method" in err and "nothing was run" in err
    assert not (tmp_path / "runs").exists()


def test_dry_run_lists_jobs_and_trains_nothing(tmp_path, capsys):
    path = write_suite(tmp_path)
    assert main(["suite", "run", str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    ids = [j.run_id for j in Suite.load(path).resolve()]
    assert all(i in out for i in ids) and out.count(" run ") >= 2 and "2 of 2 jobs would run" in out
    assert not (tmp_path / "runs").exists()


# -- running: interrupted, resumed, skipped -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    """Run the tiny suite (2 erm jobs + a cross-dataset evaluation each), interrupted by Ctrl-C
    in the second job, then again (only the second trains), then once more (nothing trains)."""
    import fairbench.training.run as runner
    from fairbench.methods.erm import ERM

    folder = tmp_path_factory.mktemp("suite")
    path = write_suite(folder, '[[evaluate]]\ndataset = "synthface"\noptions = { n_test = 64, seed = 7 }\n')
    runs = folder / "runs"
    suite = Suite.load(path)
    jobs = suite.resolve()
    obs: dict = {"path": path, "runs": runs, "ids": [j.run_id for j in jobs]}

    calls = {"n": 0}
    original_update, original_execute = ERM.update, runner.execute

    def interrupting_update(self, batch):  # Ctrl-C in the first batch of the second job
        calls["n"] += 1
        if calls["n"] == 5:  # 128 samples / batch 32 = 4 batches in job 1
            raise KeyboardInterrupt
        return original_update(self, batch)

    ERM.update = interrupting_update
    try:
        with pytest.raises(KeyboardInterrupt):
            run_suite(Suite.load(path), runs, quiet=True)
    finally:
        ERM.update = original_update
    obs["after_interrupt"] = {j.run_id: job_state(j, runs).state for j in Suite.load(path).resolve()}
    obs["first_done_mtime"] = (runs / jobs[0].run_id / "metrics.json").stat().st_mtime

    executed: list[str] = []

    def spy(cfg, runs_dir, **kw):
        executed.append(run_id(cfg))
        return original_execute(cfg, runs_dir, **kw)

    runner.execute = spy
    try:
        obs["resume"] = run_suite(Suite.load(path), runs, quiet=True)
        obs["executed_resume"] = list(executed)
        executed.clear()
        obs["again"] = run_suite(Suite.load(path), runs, quiet=True)
        obs["executed_again"] = list(executed)
    finally:
        runner.execute = original_execute
    return obs


def test_interrupted_suite_resumes_only_what_is_missing(tiny_suite):
    first, second = tiny_suite["ids"]
    assert tiny_suite["after_interrupt"] == {first: "done", second: "incomplete"}  # Ctrl-C: resumable
    assert tiny_suite["executed_resume"] == [second]
    result = tiny_suite["resume"]
    assert result.ran == [2] and not result.failed
    assert (tiny_suite["runs"] / first / "metrics.json").stat().st_mtime == tiny_suite["first_done_mtime"]
    for rid in (first, second):
        assert RunRecord(tiny_suite["runs"] / rid).status["state"] == "done"
    # the evaluation of the first job ran after training in the first invocation? No: the Ctrl-C
    # stopped it before evaluations; both run in the second invocation
    assert sorted(result.evaluated) == [(1, "synthface-test"), (2, "synthface-test")]


def test_finished_suite_is_skipped(tiny_suite):
    assert tiny_suite["executed_again"] == []
    result = tiny_suite["again"]
    assert result.ran == [] and result.evaluated == [] and {s.state for s in result.before.values()} == {"done"}


def test_suite_writes_table_and_pareto_plot(tiny_suite):
    report = tiny_suite["runs"] / "suite-tiny"
    table = (report / "table.md").read_text()
    assert "## Layout: summary" in table and "## Layout: groups" in table
    assert "evaluated on synthface test" in table and "evaluated on synthface [evaluation] test" in table
    png = report / "pareto.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert [p.name for p in tiny_suite["again"].outputs] == ["table.md", "pareto.png", "report.html"]


def test_compare_and_plot_restricted_to_the_suite(tiny_suite, tmp_path, capsys):
    runs = tiny_suite["runs"]
    other = runs / "erm-synthface-0000000000"  # a run of no suite: must not appear
    shutil.copytree(runs / tiny_suite["ids"][0], other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["train"]["epochs"] = 2
    (other / "config.json").write_text(json.dumps(cfg))
    assert main(["compare", "--runs-dir", str(runs), "--format", "json", "--layout", "summary"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["seeds"] for r in rows if r["eval"] == "synthface") == 3
    assert sum(r["seeds"] for r in rows if r["eval"] == "synthface [evaluation]") == 3  # (the copy has one too)
    assert main(["compare", "--runs-dir", str(runs), "--suite", str(tiny_suite["path"]), "--format", "json",
                 "--layout", "groups"]) == 0
    tables = json.loads(capsys.readouterr().out)["tables"]
    assert [(t["context"]["evaluated_on"], r["source"]) for t in tables for r in t["rows"]] == \
        [("synthface", "ours, 2 seeds"), ("synthface [evaluation]", "ours, 2 seeds")]
    out = tmp_path / "p.svg"
    assert main(["plot", "pareto", "--runs-dir", str(runs), "--suite", str(tiny_suite["path"]), "--x", "dob",
                 "--y", "accuracy", "--output", str(out)]) == 0
    assert out.read_text().startswith("<?xml") and "erm" in capsys.readouterr().out
    shutil.rmtree(other)


def test_status_lists_every_state(tiny_suite, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_suite["runs"], runs)
    path = write_suite(tmp_path, "", name="more.toml")
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3, 4, 5, 6]")
                    .replace('name = "tiny"', 'name = "more"'))
    jobs = Suite.load(path).resolve()
    ids = [j.run_id for j in jobs]
    assert ids[:2] == tiny_suite["ids"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    statuses = {2: {"state": "running", "pid": os.getpid(), "host": host, "epoch": 0},  # this process, its lease
                3: {"state": "running", "pid": dead.pid, "host": host, "epoch": 0},  # died: incomplete
                4: {"state": "failed", "error": "RuntimeError: boom\ntraceback ...", "pid": 1, "host": host}}
    for index, status in statuses.items():
        (runs / ids[index]).mkdir()
        (runs / ids[index] / "config.json").write_text(json.dumps({**jobs[index].config.model_dump(mode="json"),
                                                                   "run_id": ids[index]}))
        (runs / ids[index] / "status.json").write_text(json.dumps(status))
    shutil.rmtree(runs / ids[1] / "evaluations", ignore_errors=True)
    mark_queued(runs, ids[5], detail="slurm job 12_5")  # submitted, not started: queued
    (runs / ids[6]).mkdir()  # status "running" but nobody holds its lease (died on another host): incomplete
    (runs / ids[6] / "status.json").write_text(json.dumps({"state": "running", "pid": 1, "host": "elsewhere"}))
    with hold(runs / ids[2]):
        assert main(["suite", "status", str(path), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    lines = {i: next(line for line in out.splitlines() if ids[i] in line) for i in range(7)}
    assert " done " in lines[0]
    assert " done " in lines[1]  # (no evaluations listed in this suite)
    assert " running " in lines[2] and f"pid {os.getpid()}" in lines[2]
    assert " incomplete " in lines[3] and "died" in lines[3]
    assert " failed " in lines[4] and "RuntimeError: boom" in lines[4] and "traceback" not in lines[4]
    assert " queued " in lines[5] and "slurm job 12_5" in lines[5]
    assert " incomplete " in lines[6] and "holds no lease" in lines[6]
    counts, left = out.rstrip().splitlines()[-2:]
    assert counts == "2 done, 1 running, 1 queued, 1 failed, 2 incomplete"
    assert left.startswith("job time left: ~") and left.endswith("of one worker at the pace of the finished runs "
                                                                  "(divide by the workers)")


def test_status_without_the_data_root_says_the_run_ids_are_unknown(tmp_path, monkeypatch, capsys):
    from tests.data.test_utkface import write_utkface

    monkeypatch.delenv("FAIRBENCH_UTKFACE_ROOT", raising=False)
    root = tmp_path / "utk"
    write_utkface(root)
    path = tmp_path / "utk.toml"
    path.write_text('[suite]\nname = "utk"\nseeds = [0]\n\n[base]\nmethod = "erm"\ndata.name = "utkface"\n'
                    'data.target = "gender"\ndata.image_size = 32\ntrain.epochs = 1\n')
    assert main(["suite", "status", str(path), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "the data of utkface was not found here" in capsys.readouterr().out
    assert main(["suite", "status", str(path), "--runs-dir", str(tmp_path / "runs"), "--data-root", f"utkface={root}"]) == 0
    out = capsys.readouterr().out
    (job,) = Suite.load(path).resolve({"utkface": root})
    assert job.run_id in out and "not found" not in out  # the id suite run gives it: with the data's fingerprint


def test_missing_cross_eval_is_skipped_with_a_message(tiny_suite, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_suite["runs"], runs)
    for rid in tiny_suite["ids"]:
        shutil.rmtree(runs / rid / "evaluations")
    monkeypatch.setitem(sys.modules, "fairbench.evaluation.cross_eval", None)  # as if not installed
    result = run_suite(Suite.load(tiny_suite["path"]), runs, quiet=True)
    err = capsys.readouterr().err
    assert result.ran == [] and result.evaluated == []
    assert "cross-dataset evaluations skipped (2 listed in the suite): fairbench.evaluation.cross_eval is not available" in err


@pytest.mark.slow
def test_parallel_jobs(tmp_path, capsys):
    """--jobs 2: two worker processes, one torch thread each on a 2-core machine."""
    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [5, 6]"))
    runs = tmp_path / "runs"
    assert main(["suite", "run", str(path), "--jobs", "2", "--runs-dir", str(runs), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "2 jobs in 2 worker processes" in err
    for job in Suite.load(path).resolve():
        assert RunRecord(runs / job.run_id).status["state"] == "done"
        assert (runs / "suite-tiny" / "logs" / f"{job.run_id}.log").read_text().count("epoch 1/1") == 1


@pytest.mark.parametrize("file, jobs, methods, trials, flops", [("quickstart.toml", 190, 8, 5, {5.73e12, 3.26e13}),
                                                                ("full.toml", 3525, 15, 10, {1.15e13})])
def test_protocol_suites_expand(file, jobs, methods, trials, flops):
    """The protocol suites: one FLOP budget, last-checkpoint runs, searched trials, FineFACE's extra
    row at ERM's epochs untuned (not resolved: the full suite's 3,525 jobs would fingerprint data;
    expansion is what the file decides)."""
    suite = Suite.load(ROOT / "benchmarks" / file)
    expanded = suite.jobs()
    assert len(expanded) == jobs and len({j.method for j in expanded}) == methods
    assert max(j.trial for j in expanded) == trials - 1
    assert {j.spec["train.budget_flops"] for j in expanded} == flops
    extra = [j for j in expanded if j.spec["train.budget_flops"] != min(flops)]
    assert {(j.method, j.trial) for j in extra} <= {("fineface", 0)}  # beside the common budget: FineFACE's epochs, defaults only
    assert {j.spec["selection"] for j in expanded} == {"last"}
    assert {j.trial for j in expanded if j.method == "constant"} == {0}
    assert suite.report.layouts[0] == "protocol"


# -- one code revision per table -------------------------------------------------------------------

def test_tables_hold_one_clean_code_revision_unless_told(tmp_path, monkeypatch, capsys):
    """Runs of two (fake) revisions, or of a dirty tree, are refused in a suite's tables and beside
    a new training, with what to do; --allow-mixed-revisions makes the tables with a note."""
    from fairbench.runs.environment import REVISION_ENV

    old, new = "a" * 40, "b" * 40
    runs = tmp_path / "runs"
    monkeypatch.setenv(REVISION_ENV, old)
    path = write_suite(tmp_path)
    run_suite(Suite.load(path), runs, quiet=True)
    compare = ["compare", "--runs-dir", str(runs), "--suite", str(path), "--layout", "summary"]
    assert main(compare) == 0 and "revision" not in capsys.readouterr().out  # one clean revision: no note
    # the code changed: one more seed would be trained beside runs of the old revision
    monkeypatch.setenv(REVISION_ENV, new)
    bigger = tmp_path / "bigger.toml"
    bigger.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    before = sorted(p.name for p in runs.iterdir())
    assert main(["suite", "run", str(bigger), "--runs-dir", str(runs), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"2 finished run(s) were trained at another code revision ({'a' * 10} (2 runs))" in err
    assert "fresh --runs-dir" in err and "--allow-mixed-revisions" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in runs.iterdir()) == before  # nothing trained, nothing written
    # a dirty tree: refused before training too
    monkeypatch.setenv(REVISION_ENV, new + "+dirty")
    assert main(["suite", "run", str(bigger), "--runs-dir", str(tmp_path / "fresh"), "--quiet"]) == 2
    assert "uncommitted changes" in capsys.readouterr().err and not (tmp_path / "fresh").exists()
    # told to: the third seed trains at the new revision and the tables say what they mix
    monkeypatch.setenv(REVISION_ENV, new)
    assert main(["suite", "run", str(bigger), "--runs-dir", str(runs), "--quiet", "--allow-mixed-revisions"]) == 0
    note = f"runs of 2 code revision(s), allowed by --allow-mixed-revisions: {'a' * 10} (2 runs), {'b' * 10} (1 run)"
    assert f"Note: {note}" in (runs / "suite-tiny" / "table.md").read_text()
    capsys.readouterr()
    bigger_compare = [*compare[:4], str(bigger), *compare[5:]]
    assert main(bigger_compare) == 2 and "several code revisions" in capsys.readouterr().err
    assert main([*bigger_compare, "--allow-mixed-revisions"]) == 0
    assert f"note: {note}" in capsys.readouterr().out
