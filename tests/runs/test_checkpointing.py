"""Checkpoints within an epoch: a run killed at any point and resumed ends exactly (bit for bit,
CPU, deterministic mode) where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fairbench.runs import checkpoint
from fairbench.training.run import execute
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
# bit for bit needs one thread count on both sides (1 and 2 threads sum in other orders)
SETS = ["train.deterministic=true", "train.threads=1", "train.checkpoint_every_steps=1"]


#: what metrics.json's cost measures about the process that ran, rather than computes
MEASURED_COST = ("train_seconds", "peak_memory_bytes", "peak_memory_kind")


def _same_results(a: Path, b: Path) -> None:
    """Identical records, apart from clock and memory readings."""
    for name in ("predictions_val.csv", "predictions_test.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    for m in (ma, mb):
        m.pop("wall_time_s")
        m.pop("timing")  # where the wall time went (fairbench.training.timing): clock readings too
        for key in MEASURED_COST:
            m.get("cost", {}).pop(key, None)
    assert ma == mb
    ha, hb = (json.loads((p / "history.json").read_text()) for p in (a, b))
    assert [{**h, "time": None} for h in ha] == [{**h, "time": None} for h in hb]


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    states = checkpoint.rng_states()
    torch.save(states, tmp_path / "rng.pt")
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    checkpoint.restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected


def test_checkpoint_every_steps_must_not_be_negative():
    from fairbench.config import ConfigError

    with pytest.raises(ConfigError, match="checkpoint_every_steps"):
        tiny_config("erm", sets=["train.checkpoint_every_steps=-1"])


SMALL = {"data.options": {"n_train": 128, "n_val": 64, "n_test": 64}}  # 4 steps per epoch at the tiny batch


def _crash_on_update(cfg, runs, monkeypatch, crash_at: int) -> dict:
    """Train ``cfg`` until its ``crash_at``-th update raises; the resume point it left behind."""
    from fairbench import registry

    cls = registry.methods.get(cfg.method)
    original, calls = cls.update, []

    def crashing(self, batch):
        calls.append(1)
        if len(calls) == crash_at:
            raise RuntimeError("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(cls, "update", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(cfg, runs)
    monkeypatch.setattr(cls, "update", original)
    return checkpoint.load_training_state(next(runs.glob("*/last.pt")))


# Methods with state of their own: extra optimizers (adversarial's Adam), buffers updated every
# step (GroupDRO's q), a second phase that rebuilds the model (JTT), draws from the global
# random generator inside an update (FineFACE's crop pick, consistency's jitter, Fair Mixup's pairs).
@pytest.mark.parametrize("method", ["erm", "fineface", "jtt", "groupdro", "adversarial", "consistency", "fair_mixup"])
def test_a_crash_mid_epoch_resumes_from_the_last_step_exactly(method, tmp_path, monkeypatch):
    cfg = tiny_config(method, epochs=2, sets=SETS, **SMALL)
    reference = execute(tiny_config(method, epochs=2, sets=SETS[:2], **SMALL), tmp_path / "ref")
    state = _crash_on_update(cfg, tmp_path / "runs", monkeypatch, crash_at=7)  # the third step of epoch 2
    assert (state["epoch"], state["step"]) == (1, 2)  # resumes inside the second epoch
    resumed = execute(cfg, tmp_path / "runs")
    _same_results(reference, resumed)
    # the time breakdown is the resumed attempt's, and says so
    assert json.loads((resumed / "metrics.json").read_text())["timing"]["resumed_at_epoch"] == 2
    assert "resumed_at_epoch" not in json.loads((reference / "metrics.json").read_text())["timing"]


def test_a_run_resumed_at_an_epoch_end_says_where_its_time_breakdown_begins(tmp_path, monkeypatch):
    """No mid-epoch checkpoints: a crash in epoch 2 resumes from epoch 1's end, at epoch 2."""
    cfg = tiny_config("erm", epochs=3, sets=SETS[:2], **SMALL)
    state = _crash_on_update(cfg, tmp_path / "runs", monkeypatch, crash_at=6)  # the second step of epoch 2
    assert (state["epoch"], state["step"]) == (0, None)  # epoch 1's end
    resumed = execute(cfg, tmp_path / "runs")
    assert json.loads((resumed / "metrics.json").read_text())["timing"]["resumed_at_epoch"] == 2


_CHILD = (
    "import json, sys; from pathlib import Path\n"
    "from tests.conftest import tiny_config\n"
    "from fairbench.training.run import execute\n"
    "execute(tiny_config(sys.argv[2], epochs=2, sets=json.loads(sys.argv[3])), Path(sys.argv[1]))\n"
)


def _checkpoint_versions(runs: Path, seen: set) -> None:
    for last in runs.glob("*/last.pt"):
        try:
            st = last.stat()
        except FileNotFoundError:  # replaced or removed between glob and stat
            continue
        seen.add((st.st_ino, st.st_mtime_ns))


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_result(tmp_path):
    """Three real processes killed with SIGKILL at random points (after a random number of
    checkpoints and a random delay: during a step, a checkpoint write or an evaluation), each time
    resumed; the finished run equals an uninterrupted one bit for bit."""
    method = "fineface"  # N + 2 optimizer steps per update, a global-RNG draw in each
    reference = execute(tiny_config(method, epochs=2, sets=SETS[:2]), tmp_path / "ref")
    runs = tmp_path / "runs"
    rng = np.random.default_rng(2026)
    kills = 0
    for _ in range(3):
        if list(runs.glob("*/metrics.json")):  # finished before the last kill (a very fast machine)
            break
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(runs), method, json.dumps(SETS)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wanted, seen = int(rng.integers(1, 5)), set()
        deadline = time.time() + 120
        while len(seen) < wanted and proc.poll() is None and time.time() < deadline:
            _checkpoint_versions(runs, seen)
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0.0, 0.05)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()[-2000:]
    assert kills >= 2, "the run finished before it could be killed twice"
    finished = next(runs.glob("*/metrics.json"), None)
    _same_results(reference, finished.parent if finished else execute(tiny_config(method, epochs=2, sets=SETS), runs))


def test_a_resume_on_another_thread_count_says_it_will_not_be_bit_for_bit(tmp_path, monkeypatch, capsys):
    from fairbench import registry

    cls = registry.methods.get("erm")
    original, calls = cls.update, []

    def crash_on_the_third_update(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(cls, "update", crash_on_the_third_update)
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(tiny_config("erm", sets=["train.threads=1", "train.checkpoint_every_steps=1"]), tmp_path)
    monkeypatch.setattr(cls, "update", original)
    capsys.readouterr()
    execute(tiny_config("erm", sets=["train.threads=2", "train.checkpoint_every_steps=1"]), tmp_path)
    err = capsys.readouterr().err
    assert "resuming at epoch 1, step 2" in err
    assert "the interrupted run trained on 1 CPU thread(s), this one on 2" in err and "--threads 1" in err
