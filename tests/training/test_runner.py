"""The runner end to end on the built-in benchmark: records, selection, re-runs, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from fairbench import registry
from fairbench.methods.erm import ERM
from fairbench.runs.lifecycle import RunAlreadyDone
from fairbench.runs.record import RunRecord
from fairbench.training.run import execute
from tests.conftest import tiny_config


def test_run_writes_a_complete_record(run_tiny):
    path = run_tiny("erm", epochs=2)
    record = RunRecord(path)
    assert record.status["state"] == "done"
    for name in ("config.json", "environment.json", "history.json", "metrics.json", "dataset.json",
                 "predictions_val.csv", "predictions_test.csv", "checkpoint.pt"):
        assert (path / name).is_file(), name
    assert not (path / "last.pt").exists()  # removed once the run is done
    env = record.environment()
    assert env["device"] == "cpu" and env["packages"]["torch"] and "ended" in env
    assert env["torch_threads"] == torch.get_num_threads()  # results depend on it
    metrics = record.metrics()
    assert metrics["selection"]["rule"] == "accuracy"
    assert metrics["selection"]["selected_epoch"] in (1, 2)  # counted from 1, as the log counts
    # the selected epoch is the best validation epoch, chosen on validation only
    history = json.loads((path / "history.json").read_text())
    val_accs = [h["val"]["accuracy"] for h in history]
    assert metrics["selection"]["selected_epoch"] == int(np.argmax(val_accs)) + 1
    test = record.predictions("test")
    assert len(test) == 128 and set(test["pred"]).issubset({0, 1})
    assert {"index", "sample_id", "target", "group", "skin_tone", "presentation", "score_0", "score_1"} <= set(test.columns)
    # metrics are recomputable from the stored predictions alone
    from fairbench.metrics import evaluate_predictions

    again = evaluate_predictions(test["target"].to_numpy(), test["pred"].to_numpy(), test["group"].to_numpy())
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert again["dob"] == pytest.approx(metrics["test"]["dob"])
    # checkpoints load with weights_only=True
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] + 1 == metrics["selection"]["selected_epoch"]  # the checkpoint's epoch is an index


def test_same_configuration_again_is_reported_done(tmp_path):
    cfg = tiny_config("erm")
    path = execute(cfg, tmp_path)
    with pytest.raises(RunAlreadyDone) as done:
        execute(cfg, tmp_path)
    assert done.value.path == path
    before = (path / "metrics.json").read_text()
    assert execute(cfg, tmp_path, force=True) == path
    assert json.loads(before).keys() == json.loads((path / "metrics.json").read_text()).keys()


def test_seeded_runs_are_reproducible(tmp_path):
    a = execute(tiny_config("erm", sets=["train.deterministic=true"]), tmp_path / "a")
    b = execute(tiny_config("erm", sets=["train.deterministic=true"]), tmp_path / "b")
    pa, pb = RunRecord(a).predictions("test"), RunRecord(b).predictions("test")
    assert np.allclose(pa["score_1"], pb["score_1"], atol=1e-5)


def test_group_labels_never_reach_a_group_blind_method(tmp_path, monkeypatch):
    seen = []
    original = ERM.update

    def spy(self, batch):
        seen.append((batch.group, batch.attributes, self.ctx.train_groups, self.ctx.group_names))
        return original(self, batch)

    monkeypatch.setattr(ERM, "update", spy)
    execute(tiny_config("erm"), tmp_path)
    assert seen and all(item == (None, None, None, None) for item in seen)


def test_a_failed_run_is_marked_failed_and_compare_skips_it(tmp_path, monkeypatch):
    from fairbench.results.reporting import collect_runs

    execute(tiny_config("erm"), tmp_path)

    def boom(self, batch):
        raise RuntimeError("exploded on purpose")

    monkeypatch.setattr(ERM, "update", boom)
    with pytest.raises(RuntimeError):
        execute(tiny_config("erm", sets=["train.seed=5"]), tmp_path)
    runs, skipped = collect_runs(tmp_path)
    assert len(runs) == 1
    assert len(skipped) == 1 and "failed" in skipped[0][1] and "exploded on purpose" in skipped[0][1]


def test_a_killed_run_is_incomplete_and_resumes(tmp_path):
    """SIGKILL mid-run: status says incomplete, compare skips it, re-running resumes it."""
    from fairbench.results.reporting import collect_runs

    code = (
        "import sys, time; from pathlib import Path\n"
        "from tests.conftest import tiny_config\n"
        "from fairbench.training.run import execute\n"
        "import fairbench.methods.erm as erm\n"
        "orig = erm.ERM.update\n"
        "def slow(self, batch):\n"
        "    time.sleep(0.4)  # leave time to kill it between epochs 1 and 6\n"
        "    return orig(self, batch)\n"
        "erm.ERM.update = slow\n"
        f"execute(tiny_config('erm', epochs=6), Path(sys.argv[1]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    deadline = time.time() + 120
    run_dir = None
    while time.time() < deadline:
        lasts = list(tmp_path.glob("*/last.pt"))
        if lasts:
            run_dir = lasts[0].parent
            break
        time.sleep(0.2)
    assert run_dir is not None, "the run never finished its first epoch"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = RunRecord(run_dir).status
    assert status["state"] == "incomplete" and "died" in status["reason"]
    runs, skipped = collect_runs(tmp_path)
    assert runs.empty and skipped[0][0] == run_dir.name
    epochs_done = len(json.loads((run_dir / "history.json").read_text()))
    assert 1 <= epochs_done < 6
    # re-running the same configuration resumes after the last finished epoch
    execute(tiny_config("erm", epochs=6), tmp_path)
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(6))
    assert RunRecord(run_dir).status["state"] == "done"


def test_max_samples_and_groups_recorded(run_tiny):
    path = run_tiny("erm")
    meta = json.loads((path / "dataset.json").read_text())
    assert meta["split_sizes"] == {"train": 256, "val": 128, "test": 128}
    assert len(meta["group_names"]) == 8


def test_written_files_get_the_umasks_permissions(tmp_path, monkeypatch):
    """Atomic writes go through mkstemp (owner-only); the result must carry the permissions an
    ordinary open() gives under the process umask, or a lab's shared runs folder is unreadable
    to everyone but its writer."""
    import stat

    import os

    from fairbench.runs import store as run_store

    current = os.umask(0)
    os.umask(current)
    assert run_store._UMASK == current  # read right at import
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        monkeypatch.setattr(run_store, "_UMASK", umask)  # read once at import, from the process
        run_store.atomic_write_json(tmp_path / f"m{umask:o}.json", {"a": 1})
        assert stat.S_IMODE((tmp_path / f"m{umask:o}.json").stat().st_mode) == mode


def test_an_unreadable_status_is_flagged_and_refused_without_force(tmp_path):
    from fairbench.runs.lifecycle import RunRefused, existing_state

    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text('{"state": "do')
    status = RunRecord(run).status
    assert status["state"] == "incomplete" and status["unreadable"] is True
    with pytest.raises(RunRefused, match="status.json is unreadable"):
        existing_state(run, force=False)
    assert existing_state(run, force=True) == "incomplete"
    # a readable status that merely quotes the words is not unreadable
    (run / "status.json").write_text(json.dumps({"state": "failed", "error": "x", "reason": "unreadable status.json"}))
    assert "unreadable" not in RunRecord(run).status and existing_state(run, force=False) == "failed"


def test_force_says_at_the_start_which_evaluations_it_discards(tmp_path, capsys):
    """The evaluations of a run belong to its weights: a forced retrain drops them, and says so first."""
    cfg = tiny_config("erm")
    path = execute(cfg, tmp_path)
    for name in ("utkface-test", "celeba-test"):
        (path / "evaluations" / name).mkdir(parents=True)
        (path / "evaluations" / name / "metrics.json").write_text("{}")
    capsys.readouterr()
    assert execute(cfg, tmp_path, force=True) == path
    lines = capsys.readouterr().err.splitlines()
    notes = [i for i, line in enumerate(lines) if "evaluations" in line]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    assert notes[0] < first_epoch
    assert lines[notes[0]].startswith(f"note: --force replaces {path} once this run is done, and with it its "
                                      "evaluations (celeba-test, utkface-test")
    assert f"`fairbench eval {path} --dataset NAME" in lines[notes[0]]
    assert lines[notes[-1]] == f"replaced the earlier run in {path}; its evaluations were discarded: celeba-test, utkface-test"
    assert not (path / "evaluations").exists()


def test_validate_every_scores_every_nth_and_the_last_epoch_and_a_crash_between_resumes(tmp_path, monkeypatch):
    from fairbench.config import identity_dict, run_id
    from tests.conftest import crash_then_resume

    cfg = tiny_config("erm", epochs=5, **{"train.validate_every": 2})
    assert "validate_every" not in identity_dict(tiny_config("erm", epochs=5))["train"]  # earlier ids kept
    assert run_id(cfg) != run_id(tiny_config("erm", epochs=5))  # a different choice of epochs
    whole = execute(cfg, tmp_path / "whole")
    history = json.loads((whole / "history.json").read_text())
    assert [h["epoch"] for h in history if h["val"] is not None] == [1, 3, 4]
    metrics = json.loads((whole / "metrics.json").read_text())
    chosen = {metrics["selection"]["selected_epoch"]} | {r["epoch"] for r in metrics["rules"].values()}
    assert chosen <= {2, 4, 5}  # counted from 1: only validated epochs can be chosen
    # killed after an epoch that was not validated (epoch 0): resumes to the same record
    resumed = crash_then_resume(cfg, tmp_path / "resumed", monkeypatch, crash_epoch=1)
    again = json.loads((resumed / "metrics.json").read_text())
    assert again["test"]["accuracy"] == metrics["test"]["accuracy"] and again["selection"] == metrics["selection"]
    assert [h["val"] for h in json.loads((resumed / "history.json").read_text())] == [h["val"] for h in history]
