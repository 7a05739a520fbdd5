"""Launchers: the plugin seam, the local pool's GPU pinning and thread counts (real worker
processes on the CPU; the GPU indices are only handed out, so no GPU is needed)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types

import pytest

from fairbench import registry
from fairbench.cli import main
from fairbench.config import ConfigError
from fairbench.suites.launchers.base import Launcher, make_launcher
from fairbench.suites.launchers.local import LocalLauncher, usable_cores
from fairbench.suites.launchers.suite_run import run_suite
from fairbench.suites.suite import Suite
from tests.suites.test_suite import write_suite


def test_builtin_launchers_are_registered_through_the_entry_point_group(capsys):
    assert {"local", "slurm"} <= set(registry.launchers.names())
    assert registry.launchers.get("local") is LocalLauncher
    assert main(["list", "launchers"]) == 0
    out = capsys.readouterr().out
    assert "local " in out and "slurm " in out and "submitit" in out


def test_a_plugin_launcher_gets_the_jobs_and_its_options(tmp_path, monkeypatch):
    """A lab's own launcher: registered by name, options from [launcher.NAME] and the command line."""
    module = types.ModuleType("lab_launcher")
    seen = {}

    @registry.register_launcher("lab")
    class LabLauncher(Launcher):
        class Options(Launcher.Options):
            queue: str = "default"
            priority: int = 0

        def launch(self, todo, ctx):
            seen["jobs"] = [j.run_id for j in todo]
            seen["options"] = self.options.model_dump()

    module.LabLauncher = LabLauncher
    monkeypatch.setitem(sys.modules, "lab_launcher", module)
    try:
        path = write_suite(tmp_path, '[launcher]\ndefault = "lab"\n[launcher.lab]\nqueue = "gpu"\n')
        result = run_suite(Suite.load(path), tmp_path / "runs", launcher_options={"priority": 3}, quiet=True)
        assert seen["options"] == {"queue": "gpu", "priority": 3}
        assert seen["jobs"] == [j.run_id for j in result.jobs]
        with pytest.raises(ConfigError, match="unknown key 'partition'"):
            make_launcher("lab", {}, {"partition": "x"}, "suite.toml")
    finally:
        registry.launchers._entries.pop("lab", None)


def _jobs(tmp_path, device: str):
    return Suite.load(write_suite(tmp_path)).resolve(device=device)


def test_gpu_slots_round_robin_over_the_visible_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    jobs = _jobs(tmp_path, "auto")
    slots, threads = LocalLauncher(LocalLauncher.Options(jobs_per_gpu=2)).plan(jobs)
    assert slots == ["3", "5", "3", "5"] and threads == max(1, usable_cores() // 4)
    assert LocalLauncher(LocalLauncher.Options(gpus=["1"], jobs=3)).plan(jobs)[0] == ["1", "1", "1"]
    assert LocalLauncher(LocalLauncher.Options(gpus=[], jobs=2)).plan(jobs)[0] == [None, None]  # --gpus none
    cpu_jobs = _jobs(tmp_path, "cpu")  # jobs that ask for the CPU get CPU workers
    slots, threads = LocalLauncher(LocalLauncher.Options(jobs=2, threads=1)).plan(cpu_jobs)
    assert slots == [None, None] and threads == 1


@pytest.mark.slow
def test_pool_pins_each_worker_to_one_gpu(tmp_path, capsys):
    """--gpus 0,1 (one worker per GPU): every run records the one GPU it was given, both GPUs are
    used, and the runs given the same GPU never overlap in time. (Without CUDA the runs train on
    the CPU; the pinning is what is tested.)"""
    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]"))
    runs = tmp_path / "runs"
    assert main(["suite", "run", str(path), "--runs-dir", str(runs), "--device", "auto", "--gpus", "0,1",
                 "--threads", "1", "--quiet"]) == 0
    assert "4 jobs in 2 worker processes on GPU 0, GPU 1 (1 per GPU), 1 torch thread(s) each" in capsys.readouterr().err
    by_gpu: dict[str, list] = {}
    for job in Suite.load(path).resolve(device="auto"):
        env = json.loads((runs / job.run_id / "environment.json").read_text())
        assert env["torch_threads"] == 1
        span = (dt.datetime.fromisoformat(env["started"]), dt.datetime.fromisoformat(env["ended"]))
        by_gpu.setdefault(env["cuda_visible_devices"], []).append(span)
    assert set(by_gpu) == {"0", "1"}
    for spans in by_gpu.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # one worker per GPU: one run at a time


def test_a_pool_starts_each_seeds_largest_budget_first_and_keeps_seeds_in_order():
    from types import SimpleNamespace

    from fairbench.suites.launchers.local import longest_first_within_seed

    def job(name, seed, flops):
        return SimpleNamespace(name=name, config=SimpleNamespace(train=SimpleNamespace(seed=seed, budget_flops=flops)))

    todo = [job("erm0", 0, 5.7e12), job("ff0", 0, 5.7e12), job("ff30-0", 0, 3.3e13), job("e0", 0, None),
            job("erm1", 1, 5.7e12), job("ff30-1", 1, 3.3e13)]
    assert [j.name for j in longest_first_within_seed(todo)] == ["ff30-0", "erm0", "ff0", "e0", "ff30-1", "erm1"]


def test_the_suite_log_says_how_long_the_rest_should_take_at_this_pace(capsys):
    from types import SimpleNamespace

    from fairbench.suites.launchers.suite_progress import SuiteProgress

    def job(index, flops, share=None):
        train = SimpleNamespace(budget_flops=flops, stop_after_share=share)
        return SimpleNamespace(index=index, run_id=f"run{index}", config=SimpleNamespace(train=train))

    jobs = [job(1, 1e12), job(2, 1e12), job(3, 4e12), job(4, None), job(5, 2e12)]
    with SuiteProgress(len(jobs), 0, quiet=True) as progress:
        progress.pace.expect(jobs, workers=2)
        progress.end(jobs[0], "done", "", 60.0)  # 60 s per TFLOP; job 4 (epochs, no budget) has no pace yet
        progress.end(jobs[1], "done", "", 6.0)  # resumed near its end: the median is of 60 and 6 s
        progress.end(jobs[3], "done", "", 600.0)  # left: 4 + 2 TFLOP at 33 s = 198 s over 2 workers
        progress.end(jobs[2], "failed", "boom", 1.0)  # not a pace; left: 2 TFLOP = 66 s, one job
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("[1/5 finished]") and lines[1].endswith("[2/5 finished]")
    assert lines[2].endswith("[3/5 finished, ~2 min left at this pace]")
    assert lines[3].endswith("[4/5 finished, ~1 min left at this pace]")
    # a halving rung: what trains next depends on its ranking, so no estimate
    with SuiteProgress(2, 0, quiet=True) as progress:
        rung = [job(1, 1e12, 0.25), job(2, 1e12, 0.25)]
        progress.pace.expect(rung, workers=1)
        progress.end(rung[0], "done", "", 15.0)
    assert capsys.readouterr().err.strip().endswith("[1/2 finished]")
