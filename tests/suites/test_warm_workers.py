"""The local launcher's pool workers run several jobs in one warm process, with the results of
fresh processes (fairbench.suites.launchers.local, ``jobs_per_process``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from fairbench.suites.launchers.local import _reap_retired
from fairbench.suites.launchers.suite_run import run_suite
from fairbench.runs.record import RunRecord
from fairbench.suites.suite import Suite

SUITE = """
[suite]
name = "warm"
seeds = [0, 1, 2]

[base]
method = "erm"
data.image_size = 32
data.options = { n_train = 128, n_val = 64, n_test = 64 }
train.epochs = 1
train.batch_size = 32
train.device = "cpu"
train.workers = 0

[report]
layouts = ["summary"]
"""


def _run(tmp_path: Path, name: str, jobs_per_process: int) -> tuple[Suite, Path]:
    path = tmp_path / f"{name}.toml"
    path.write_text(SUITE)
    runs = tmp_path / name
    suite = Suite.load(path)
    result = run_suite(suite, runs, quiet=True, launcher_options={"threads": 1, "jobs_per_process": jobs_per_process})
    assert not result.failed and len(result.ran) == 3
    return suite, runs


@pytest.mark.slow
def test_a_warm_worker_gives_the_predictions_of_fresh_processes(tmp_path: Path):
    suite, warm = _run(tmp_path, "warm", jobs_per_process=3)
    _, fresh = _run(tmp_path, "fresh", jobs_per_process=1)
    jobs = suite.resolve()
    pids = {name: {RunRecord(runs / j.run_id).status["pid"] for j in jobs} for name, runs in
            (("warm", warm), ("fresh", fresh))}
    assert len(pids["warm"]) == 1 and len(pids["fresh"]) == 3  # one process served the three jobs
    for job in jobs:
        for split in ("val", "test"):
            pd.testing.assert_frame_equal(pd.read_csv(warm / job.run_id / f"predictions_{split}.csv"),
                                          pd.read_csv(fresh / job.run_id / f"predictions_{split}.csv"))
        # each job has its own log, and its timing starts at its own start, not the worker's
        log = warm / "suite-warm" / "logs" / f"{job.run_id}.log"
        assert log.read_text().count("epoch 1/1") == 1
    startups = [json.loads((warm / j.run_id / "metrics.json").read_text())["timing"]["phases_s"]["startup"]
                for j in jobs]
    assert startups[0] > max(startups[1:])  # the first job paid for the imports, the next ones did not


def _zombie(proc) -> bool:
    """Whether ``proc`` has exited and not been reaped yet (state Z in /proc)."""
    try:
        return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_retired_workers_are_reaped_as_they_exit():
    """A worker retired after its last job (negative key) is forgotten once it has exited, and its
    process reaped then, not left a zombie until the suite ends; a retired worker still running,
    and a slot's own worker (the pool's loop polls those), stay."""
    retired, own = (subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(2))
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while not (_zombie(retired) and _zombie(own)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _zombie(retired) and _zombie(own)
        workers = {0: SimpleNamespace(proc=own), -1: SimpleNamespace(proc=retired), -2: SimpleNamespace(proc=running)}
        _reap_retired(workers)
        assert set(workers) == {0, -2}
        assert retired.returncode == 0 and not Path(f"/proc/{retired.pid}").exists()  # reaped
        assert running.returncode is None
    finally:
        running.kill()
        for proc in (running, own):
            proc.wait()
