"""FineFACE crop + resize: the exact batched path (slice + interpolate semantics, the default)
vs the approximate ``grid_sample`` path, on the CPU, in one process.

Setting of the paper: batch 16, 3 x 448 x 448 (and 224), four crops per iteration (A_1..A_3,
A_oval) timed as one call each on random boxes of the sizes attention produces.

Run: .venv/bin/pytest benchmarks/test_bench_crop.py --benchmark-only -s
The ratio (exact mean / grid_sample mean) is printed with -s and stored in
``extra_info["exact_over_grid_sample"]`` of the second test of each pair: above 1 means
grid_sample is faster. Timings are of this machine's CPU only; accelerators differ.
"""

from __future__ import annotations

import pytest
import torch

from fairbench.methods.fineface_attention import crop_and_resize

B = 16
ROUNDS = 5
_results: dict[tuple[int, str], float] = {}


def _data(size: int):
    g = torch.Generator().manual_seed(size)
    x = (torch.rand(B, 3, size, size, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
    side = torch.randint(size // 3, size, (B,), generator=g)  # boxes of a third to all of the image
    y0 = (torch.rand(B, generator=g) * (size - side)).long()
    x0 = (torch.rand(B, generator=g) * (size - side)).long()
    return x, torch.stack([y0, y0 + side, x0, x0 + side], 1)


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("method", ["exact", "grid_sample"])
def test_crop(benchmark, size, method):
    x, boxes = _data(size)
    out = benchmark.pedantic(crop_and_resize, args=(x, boxes), kwargs={"method": method}, rounds=ROUNDS,
                             iterations=1, warmup_rounds=1)
    assert out.shape == x.shape
    _results[(size, method)] = benchmark.stats.stats.mean
    other = "exact" if method == "grid_sample" else "grid_sample"
    if (size, other) in _results:
        ratio = _results[(size, "exact")] / _results[(size, "grid_sample")]
        benchmark.extra_info["exact_over_grid_sample"] = round(ratio, 2)
        print(f"\n{size} px, batch {B}: exact {_results[(size, 'exact')] * 1e3:.1f} ms, grid_sample "
              f"{_results[(size, 'grid_sample')] * 1e3:.1f} ms, exact / grid_sample {ratio:.2f}x "
              f"({torch.get_num_threads()} threads)")
