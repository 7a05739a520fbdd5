"""The slurm launcher: options -> the sbatch script submitit writes (no cluster needed), and a
small suite end to end on a real Slurm (scripts/slurm-local.sh start): one job array, one task
signalled as at a preemption (``scancel --signal=USR2``, what Slurm sends), requeued and resumed
from its checkpoint; `suite status` reads queued / running / done from the run store."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairbench.config import ConfigError
from fairbench.suites.launchers.base import make_launcher
from fairbench.suites.launchers.slurm import SlurmLauncher, parse_time, sbatch_pairs, sbatch_script_lines
from fairbench.runs.job_state import job_state
from fairbench.suites.suite import Suite
from tests.suites.test_suite import write_suite

ROOT = Path(__file__).resolve().parents[2]


def slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return "UP" in ping.stdout and any(s.strip("*~#") in ("idle", "mixed", "allocated") for s in nodes.stdout.split())


requires_slurm = pytest.mark.skipif(not slurm_up(), reason="no Slurm cluster answers (scripts/slurm-local.sh start)")


# -- options, without a cluster ------------------------------------------------------------------

def test_options_become_sbatch_lines():
    from submitit.slurm.slurm import _make_sbatch_string  # what submitit writes for these parameters

    launcher = make_launcher("slurm", {"slurm": {"partition": "gpu", "time": "1-02:30:00", "gpus_per_job": 2,
                                                 "cpus_per_job": 8, "mem_gb": 32, "array_parallelism": 5}},
                             {"account": "lab", "qos": "high", "sbatch": ["--constraint=a100", "--exclusive"],
                              "setup": ["module load cuda"]}, "test.toml")
    assert isinstance(launcher, SlurmLauncher)
    params = launcher.executor_parameters("quick")
    script = _make_sbatch_string(command="python -m x", folder="/runs/suite-quick/slurm", map_count=12, **params)
    lines = [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in ["--partition=gpu", "--time=1590", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=32768MB",
                     "--array=0-11%5", "--account=lab", "--qos=high", "--constraint=a100", "--exclusive",
                     "--job-name=fairbench-quick", "--signal=USR2@120", "--nodes=1", "--ntasks-per-node=1"]:
        assert expected in lines, (expected, lines)
    assert "module load cuda" in script.split("# setup", 1)[1]


@pytest.mark.parametrize("text, minutes", [(90, 90), ("90", 90), ("1:30:00", 90), ("30:30", 31), ("2-00", 2880),
                                           ("1-00:00:30", 1441)])
def test_time_formats(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("table, overrides, message", [
    ({"slurm": {"partiton": "gpu"}}, {}, "unknown key 'partiton'"),
    ({}, {"time": "soon"}, "time"),
    ({"partition": "gpu"}, {}, r"options go in a table per launcher, e.g. \[launcher.slurm\] partition"),
    ({}, {"sbatch": ["--bad option"]}, "expected --name=value"),
])
def test_bad_launcher_options_are_named(table, overrides, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        make_launcher("slurm", table, overrides, "suite.toml")


def test_sbatch_pairs():
    assert sbatch_pairs(["--constraint=a100", "#SBATCH --exclusive", "nice=10"]) == \
        {"constraint": "a100", "exclusive": True, "nice": "10"}


def test_no_slurm_commands_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    launcher = make_launcher("slurm", {}, {}, "suite.toml")
    with pytest.raises(ConfigError, match="needs Slurm's commands"):
        launcher.executor(tmp_path, "x")


# -- a real cluster -----------------------------------------------------------------------------

LAUNCHER = """
[[evaluate]]
dataset = "synthface"
options = { n_test = 64, seed = 7 }

[launcher]
default = "slurm"

[launcher.slurm]
time = 30
cpus_per_job = 1
mem_gb = 1
array_parallelism = 2
sbatch = ["--comment=fairbench-test"]
wait = true
poll_s = 1
"""


def _squeue_has(task: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
    return any(line.split()[0] == task and line.split()[1] == "RUNNING" for line in out.splitlines() if line.strip())


def _epochs_done(run: Path) -> int:
    try:
        return len(json.loads((run / "history.json").read_text()))
    except (FileNotFoundError, ValueError):
        return 0


@requires_slurm
@pytest.mark.slurm
def test_suite_on_slurm_with_a_preempted_task_requeued_and_resumed(tmp_path):
    """Task 0 is preempted (USR2: submitit checkpoints and requeues it); task 1 is killed and
    requeued by the scheduler (``scontrol requeue``: SIGTERM, then SIGKILL, no chance to save);
    both resume from their last checkpoint and every epoch is trained once."""
    # Long enough to be signalled in the middle on a fast machine: after `scontrol requeue` a task keeps
    # training until the SIGKILL (submitit bypasses the SIGTERM), 5-10 s here (KillWait=5); at ~0.1 s
    # an epoch, 40 epochs were all trained by then on CI and the kill found a finished run.
    epochs = 200
    path = write_suite(tmp_path, LAUNCHER, name="slurmtiny.toml")  # the tiny suite, 2 runs, on the cluster
    path.write_text(path.read_text().replace('name = "tiny"', 'name = "slurmtiny"')
                    .replace("train.epochs = 1", f"train.epochs = {epochs}"))
    runs = tmp_path / "runs"
    suite = Suite.load(path)
    jobs = suite.resolve()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fairbench", "suite", "run", str(path), "--runs-dir", str(runs),
                             "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = runs / "suite-slurmtiny" / "slurm"
    first, second = runs / jobs[0].run_id, runs / jobs[1].run_id
    seen: set[str] = set()
    seen_after: set[str] = set()
    signalled = killed = None
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            state = job_state(jobs[0], runs).state
            seen.add(state)
            scripts = list(folder.glob("*_submission.sh"))
            array = scripts[0].name.split("_")[0] if scripts else None
            if signalled is None and state == "running" and _epochs_done(first) >= 1 and _squeue_has(f"{array}_0"):
                # what Slurm sends a job at preemption / before its time limit (--signal=USR2@...)
                subprocess.run(["scancel", "--signal=USR2", f"{array}_0"], check=True, timeout=30)
                signalled = f"{array}_0"
            elif signalled:
                seen_after.add(state)
            if killed is None and job_state(jobs[1], runs).state == "running" and _epochs_done(second) >= 1 \
                    and _squeue_has(f"{array}_1"):
                subprocess.run(["scontrol", "requeue", f"{array}_1"], check=True, timeout=30)
                killed = f"{array}_1"
        out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert signalled, f"the first run finished before it could be signalled ({epochs} epochs); states seen: {seen}"
    # the store said "queued" while Slurm held the requeued task, then "done"
    assert "queued" in seen_after and job_state(jobs[0], runs).state == "done", seen_after
    # one job array for the suite; its sbatch script carries the options
    scripts = list(folder.glob("*_submission.sh"))
    assert len(scripts) == 1
    lines = sbatch_script_lines(scripts[0])
    for expected in ["--array=0-1%2", "--cpus-per-task=1", "--time=30", "--mem=1024MB", "--comment=fairbench-test",
                     "--job-name=fairbench-slurmtiny", "--signal=USR2@120"]:
        assert expected in lines, (expected, lines)
    # the requeued task resumed from its checkpoint: every epoch once, the log says where it resumed
    history = json.loads((first / "history.json").read_text())
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["selection"]["selected_epoch"] >= 1
    log = (first / f"slurm-{signalled}.err").read_text()  # the link beside the run to submitit's log
    assert re.search(r"resuming (from|at) epoch [1-9]", log) and "requeued" in log
    assert [h["epoch"] for h in history] == list(range(epochs))
    assert killed, "the second run finished before it could be killed"
    log = (second / f"slurm-{killed}.err").read_text()
    assert re.search(r"resuming (from|at) epoch [1-9]", log), log[-2000:]
    assert [h["epoch"] for h in json.loads((second / "history.json").read_text())] == list(range(epochs))
    for job in jobs:
        assert job_state(job, runs).state == "done"
    assert "2 trained now" in out and "evaluations run" not in out  # the tasks evaluated, not `suite run`
    for job in jobs:
        assert (runs / job.run_id / "evaluations" / "synthface-test" / "metrics.json").is_file()
    assert (runs / "suite-slurmtiny" / "table.md").is_file()
