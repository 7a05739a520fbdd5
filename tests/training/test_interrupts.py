"""Ctrl-C (SIGINT) of `fairbench run` at any phase: the imports of its first seconds, the setup,
training. Always one line on stderr, never a traceback, exit status 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairbench.runs.record import RunRecord

ROOT = Path(__file__).resolve().parents[2]


def _start(runs: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "fairbench", "run", "erm", "--runs-dir", str(runs), "--device", "cpu", "--threads",
            "1", "--image-size", "32", "--max-train-samples", "256", "--max-eval-samples", "64", "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # as from a terminal: a shell that started pytest in the background (`cmd &`) left SIGINT ignored,
    # which the child would inherit, and rightly respect, so the Ctrl-C under test would never arrive
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("after_s", [0.3, 1.0])
def test_ctrl_c_during_the_imports_and_setup_is_one_line(tmp_path, after_s):
    proc = _start(tmp_path / "runs", "--epochs", "1")
    time.sleep(after_s)  # python is up; fairbench, torch, pandas are being imported (or the data made)
    code, err = _interrupt(proc)
    assert "Traceback" not in err, err
    assert code == 130, err
    assert err.strip().splitlines()[-1].startswith("fairbench: interrupted"), err


def test_ctrl_c_during_training_says_what_became_of_the_run(tmp_path):
    runs = tmp_path / "runs"
    proc = _start(runs, "--epochs", "200")
    deadline = time.monotonic() + 180
    while True:  # until it trains (status.json names an epoch)
        status = next(iter(runs.glob("*/status.json")), None)
        try:
            if status is not None and json.loads(status.read_text()).get("epoch") is not None:
                break
        except ValueError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    code, err = _interrupt(proc)
    assert "Traceback" not in err, err
    assert code == 130, err
    run = status.parent
    last = err.strip().splitlines()[-1]
    assert last.startswith("fairbench: interrupted during epoch ") and last.endswith(
        f"{run} is incomplete; run the same command again to resume it"), err
    assert sum("interrupted" in line for line in err.splitlines()) == 1, err
    assert RunRecord(run).status["state"] == "incomplete"
