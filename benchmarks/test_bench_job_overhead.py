"""A suite job's overhead outside training (issue #24): the cuts, each against its baseline in
the same process.

(a) synthface rendering: the three splits of one quickstart job (``synthface-spurious``, data
    seed 0, 32 px) rendered (baseline: what every job did) against read back from the render
    cache (``fairbench.data.render_cache``, warm: the suite's later jobs on that dataset).
(b) process start: a fresh ``python -c`` that imports what a job imports and builds an SGD
    optimizer (torch.optim imports torch._dynamo on first use), timed from outside (baseline:
    what a pool's fresh process per job paid), against the same work in this warm process
    (what a warm worker's second job pays: nothing to import).

Run: .venv/bin/pytest benchmarks/test_bench_job_overhead.py --benchmark-only -s
The ratio (cut / baseline) is in ``extra_info["ratio_to_baseline"]``; nothing is asserted about speed.
Whole jobs: time ``fairbench suite run FILE --threads 1 --launcher-option jobs_per_process=1``
against ``=8``, and a run with ``FAIRBENCH_RENDER_CACHE=0`` against one without, with
``/usr/bin/time`` (docs/clusters.md, "Where a job's wall time goes").
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from fairbench.data import render_cache
from fairbench.data.synthface import SPLITS, render, render_all
from fairbench.registry import datasets

ROUNDS = 3
_baseline: dict[str, float] = {}
JOB_IMPORTS = ("import torch, fairbench.training.run, fairbench.methods.erm; "
               "torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)")


@pytest.fixture(scope="module")
def quickstart_latents():
    dataset = datasets.get("synthface-spurious")(None, datasets.get("synthface-spurious").Options(seed=0))
    options = dataset.options
    sizes = {"train": options.n_train, "val": options.n_val, "test": options.n_test}
    return {split: dataset.sample(split, sizes[split], "smiling") for split in SPLITS}


def test_render_baseline(benchmark, quickstart_latents):
    benchmark.pedantic(lambda: [render_all(lat, 32) for lat in quickstart_latents.values()], rounds=ROUNDS,
                       iterations=1)
    _baseline["render"] = benchmark.stats.stats.median


def test_render_cache_warm(benchmark, quickstart_latents, tmp_path):
    def read():
        return [render_cache.rendered("synthface-spurious", split, lat, 32, tmp_path, render_all, render)
                for split, lat in quickstart_latents.items()]

    read()  # the first job of the suite on this dataset renders and writes
    benchmark.pedantic(read, rounds=ROUNDS, iterations=1)
    if "render" in _baseline:
        benchmark.extra_info["ratio_to_baseline"] = round(benchmark.stats.stats.median / _baseline["render"], 3)


def test_process_start_fresh(benchmark):
    benchmark.pedantic(lambda: subprocess.run([sys.executable, "-c", JOB_IMPORTS], check=True), rounds=ROUNDS,
                       iterations=1)
    _baseline["start"] = benchmark.stats.stats.median


def test_process_start_warm(benchmark):
    import fairbench.methods.erm  # noqa: F401  (imported once, as in a warm worker's first job)
    import fairbench.training.run  # noqa: F401

    benchmark.pedantic(lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), rounds=ROUNDS,
                       iterations=1)
    if "start" in _baseline:
        benchmark.extra_info["ratio_to_baseline"] = round(benchmark.stats.stats.median / _baseline["start"], 4)
