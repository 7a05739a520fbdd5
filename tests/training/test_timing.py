"""Every run records where its wall time went (fairbench.training.timing), and the parts add up to the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairbench.training import timing

TINY_RUN = ["erm", "--image-size", "32", "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--threads", "1",
            "--seed", "3", "--quiet", "--set", "data.options={n_train = 256, n_val = 128, n_test = 128}",
            "--set", "train.workers=0"]


def test_time_goes_to_the_innermost_phase_and_the_parts_add_up():
    clock = timing.PhaseClock(time.time())
    clock.enter("training")
    time.sleep(0.02)
    with clock.phase("writing"):
        time.sleep(0.05)
    time.sleep(0.02)
    clock.mark("first_batch")
    out = clock.breakdown()
    assert out["phases_s"]["writing"] >= 0.05
    assert out["phases_s"]["training"] >= 0.04
    assert out["phases_s"]["training"] < out["phases_s"]["writing"] + 0.04  # the nested sleep paused training
    assert sum(out["phases_s"].values()) == pytest.approx(out["total_s"], abs=0.01)
    assert 0.09 <= out["marks_s"]["first_batch"] <= out["total_s"]


def test_move_never_takes_more_than_the_source_holds():
    clock = timing.PhaseClock(time.time(), first_phase="training")
    time.sleep(0.01)
    clock.move("training", "flop_counting", 100.0)
    out = clock.breakdown()
    assert out["phases_s"]["training"] >= 0 and out["phases_s"]["flop_counting"] >= 0.01


def test_process_start_is_before_this_module_was_imported():
    started = timing.process_started()
    assert started <= timing._IMPORTED_AT
    assert time.time() - started < 24 * 3600  # this test process, not the machine's boot


def test_a_job_start_given_by_the_entry_point_is_read_once():
    timing.begin_job(123.0)
    assert timing.take_job_start() == 123.0
    before = time.time()
    assert timing.take_job_start() >= before  # a later run in this process starts at its own call


def test_a_job_records_a_breakdown_that_matches_its_wall_time_from_outside(tmp_path: Path):
    """The tiny job runs as its own process; its recorded total (from the process's start to its
    metrics) is its wall time from outside less the report it prints and the interpreter's teardown."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = time.time()
    done = subprocess.run([sys.executable, "-m", "fairbench", "run", *TINY_RUN, "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    outside = time.time() - before
    assert done.returncode == 0, done.stderr
    (run,) = [p.parent for p in tmp_path.glob("*/metrics.json")]
    recorded = json.loads((run / "metrics.json").read_text())["timing"]
    parts = recorded["phases_s"]
    assert {"startup", "data", "setup", "training", "flop_counting", "validation", "test", "writing"} <= set(parts)
    assert all(s >= 0 for s in parts.values())
    assert sum(parts.values()) == pytest.approx(recorded["total_s"], rel=0.05)
    # the total starts at the fork, before Python's start: never more than the outside wall time
    assert recorded["total_s"] <= outside + 0.05
    # from outside, up to the moment metrics.json was written (what follows it, the printed table
    # and the interpreter's teardown, took 1-4 s on a loaded machine and is not the job's)
    until_metrics = (run / "metrics.json").stat().st_mtime - before
    assert recorded["total_s"] == pytest.approx(until_metrics, rel=0.05, abs=0.5)
    assert parts["startup"] > 0.2  # the interpreter and the imports of torch count
    assert 0 < recorded["marks_s"]["first_batch"] < recorded["total_s"]

    shown = subprocess.run([sys.executable, "-m", "fairbench", "show", "run", str(run), "--json"],
                           capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["timing"] == recorded
    table = subprocess.run([sys.executable, "-m", "fairbench", "show", "run", str(run)], capture_output=True, text=True)
    assert "validation" in table.stdout and "total" in table.stdout


def test_show_run_of_a_folder_that_is_no_finished_run_is_one_line_and_exit_2(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "fairbench", "show", "run", str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and str(tmp_path) in done.stderr
