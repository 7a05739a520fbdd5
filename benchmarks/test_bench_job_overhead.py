"""A suite job's overhead outside training (issue #24): the cuts, each against its baseline in
the same process.

(a) synthface rendering: the three splits of one quickstart job (``synthface-spurious``, data
    seed 0, 32 px) rendered (baseline: what every job did) against read back from the render
    cache (``fairbench.data.render_cache``, warm: the suite's later jobs on that dataset).
(b) process start: a fresh ``python -c`` that imports what a job imports and builds an SGD
    optimizer (torch.optim imports torch._dynamo on first use), timed from outside (baseline:
    what a pool's fresh process per job paid), against the same work in this warm process
    (what a warm worker's second job pays: nothing to import).
(c) FLOP counting: one ERM update of a quickstart batch (64 images, 32 px, ``resnet_tiny``) under
    ``FlopCounterMode`` (baseline: what every epoch's first update paid) against the same update
    without it (what an epoch whose work was counted before pays now).
(d) validation prediction: the quickstart's 1,000 validation images through ``predict_images`` at
    the default evaluation batch (64, the baseline) against batches of 256 and 1,000 (on this
    CPU, larger batches are no faster: the default stays).

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



@pytest.fixture(scope="module")
def quickstart_erm():
    """ERM as a quickstart job builds it (resnet_tiny from scratch, 32 px, lr 0.1), one thread."""
    import numpy as np

    from fairbench.backbones import create_backbone
    from fairbench.methods.base import Batch, MethodContext, TrainConfigView
    from fairbench.registry import methods

    torch.set_num_threads(1)
    erm = methods.get("erm")
    ctx = MethodContext(num_classes=2, train=TrainConfigView(30, 64, 0.1, 0.1, 0.9, 5e-4), steps_per_epoch=63,
                        image_size=32, device=torch.device("cpu"),
                        make_backbone=lambda: create_backbone("resnet_tiny", False),
                        train_targets=np.arange(4000) % 2)
    torch.manual_seed(0)
    method = erm(ctx, erm.Hparams())
    g = torch.Generator().manual_seed(0)
    # channels-last, as the pipeline hands images to a method
    x = torch.randn(64, 32, 32, 3, generator=g).permute(0, 3, 1, 2)
    return method, Batch(x=x, y=torch.arange(64) % 2, index=torch.arange(64))


def test_update_under_flop_counter_baseline(benchmark, quickstart_erm):
    from torch.utils.flop_counter import FlopCounterMode

    method, batch = quickstart_erm

    def counted():
        with FlopCounterMode(display=False):
            method.update(batch)

    counted()
    benchmark.pedantic(counted, rounds=ROUNDS * 5, iterations=1)
    _baseline["counted_update"] = benchmark.stats.stats.median


def test_update_without_flop_counter(benchmark, quickstart_erm):
    method, batch = quickstart_erm
    benchmark.pedantic(lambda: method.update(batch), rounds=ROUNDS * 5, iterations=1)
    if "counted_update" in _baseline:
        benchmark.extra_info["ratio_to_baseline"] = round(benchmark.stats.stats.median / _baseline["counted_update"], 3)


@pytest.mark.parametrize("eval_batch", [64, 8, 16, 32, 128, 256, 1000])
def test_validation_prediction_by_eval_batch(benchmark, quickstart_erm, eval_batch):
    import numpy as np

    from fairbench.evaluation.predict import predict_images

    method, _ = quickstart_erm
    images = np.random.default_rng(0).integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
    run = lambda: predict_images(method, images, eval_batch, torch.device("cpu"), False)  # noqa: E731
    run()
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    if eval_batch == 64:
        _baseline["validation"] = benchmark.stats.stats.median
    elif "validation" in _baseline:
        benchmark.extra_info["ratio_to_baseline"] = round(benchmark.stats.stats.median / _baseline["validation"], 3)
