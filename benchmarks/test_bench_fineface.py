"""FineFACE vs ERM on the CPU: one training iteration and one evaluation batch.

ResNet-50 (random init, i.e. ``backbone.pretrained=false``), 224 px, batch 8, the code's
expert sizes (512 / 1024), fp32. ERM at the same size is the in-process baseline; the ratio
FineFACE / ERM (mean time) goes into ``extra_info["ratio_to_erm"]`` of the FineFACE tests.
A FineFACE iteration is N + 2 = 5 forward + backward passes (two of them truncated) plus
the CAM / crop work; evaluation is 2 forwards + CAMs + one crop.

Run: .venv/bin/pytest benchmarks/test_bench_fineface.py --benchmark-only -s
(2 rounds each, no warm-up round, so that the whole file stays near a minute or two on a
free CPU; on a shared CPU set OMP_NUM_THREADS to the cores you actually have.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import make_batch, make_method, step_function  # noqa: E402

SIZE, BATCH, ROUNDS = 224, 8, 2
CPU = torch.device("cpu")

_means: dict[str, float] = {}


@pytest.fixture(scope="module")
def batch():
    return make_batch(BATCH, SIZE, 2, CPU, channels_last=True)


def _bench(benchmark, name: str, mode: str, batch):
    torch.manual_seed(0)
    method = make_method(name, backbone="resnet50", image_size=SIZE, batch_size=BATCH, device=CPU)
    method = method.to(memory_format=torch.channels_last)
    step = step_function(method, batch, mode, "fp32", CPU)
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    mean = benchmark.stats.stats.mean
    _means[f"{name}-{mode}"] = mean
    benchmark.extra_info.update(images_per_s=round(BATCH / mean, 2), threads=torch.get_num_threads())
    erm = _means.get(f"erm-{mode}")
    if name == "fineface" and erm is not None:
        benchmark.extra_info["ratio_to_erm"] = round(mean / erm, 2)
        print(f"\n{mode}: ERM {erm:.2f} s, FineFACE {mean:.2f} s per batch of {BATCH}: {mean / erm:.2f}x")


def test_erm_train_iteration(benchmark, batch):
    _bench(benchmark, "erm", "train", batch)


def test_fineface_train_iteration(benchmark, batch):
    _bench(benchmark, "fineface", "train", batch)


def test_erm_eval_batch(benchmark, batch):
    _bench(benchmark, "erm", "eval", batch)


def test_fineface_eval_batch(benchmark, batch):
    _bench(benchmark, "fineface", "eval", batch)
