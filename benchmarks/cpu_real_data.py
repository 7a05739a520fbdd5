#!/usr/bin/env python
"""What one epoch of FairFace costs on a CPU, measured on real FairFace images through the runner.

For each (method, image size) a child process runs ``fairbench.training.run.execute`` on a FairFace-
format folder (default: ``../shared/data/fairface-sample``, 112 real images at 448 px) with a few
training batches, and times, from inside the run: image decoding (``load_bundle``), every
``Method.update`` (the first is a warm-up and not counted) and every evaluation forward
(``predict_images``); peak RSS is the child's ``ru_maxrss``. A full FairFace epoch is then
extrapolated: 78,070 training images (the official train less the 10 % val), 8,674 val images
predicted after the epoch; the 10,954 test images once per run.

    python benchmarks/cpu_real_data.py --json benchmarks/results/cpu-real-data.json
    python benchmarks/cpu_real_data.py --methods erm --sizes 224 --steps 1     # quicker

Random initial weights (``backbone.pretrained=false``, offline): the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "fairface-sample"
#: FairFace's sizes: official train 86,744 (val = 10 % of it per group, the rest trains), official val 10,954 (= test)
FAIRFACE = {"train": 86_744 - 8_674, "val": 8_674, "test": 10_954}


def measure_one(method: str, size: int, data_root: Path, steps: int, batch_size: int, threads: int) -> dict[str, Any]:
    """Runs in the child process: one short run, timed from inside."""
    import torch

    import fairbench.training.run as runner
    from fairbench import registry
    from fairbench.config import build_config, resolve
    from fairbench.evaluation import predict

    torch.set_num_threads(threads)
    timings: dict[str, list[float]] = {"update": [], "decode": [], "predict": [], "predict_images": []}
    method_cls = registry.methods.get(method)
    update, load_bundle, predict_images = method_cls.update, runner.load_bundle, predict.predict_images

    def timed_update(self, batch):
        t0 = time.perf_counter()
        out = update(self, batch)
        timings["update"].append(time.perf_counter() - t0)
        return out

    def timed_load(cfg):
        t0 = time.perf_counter()
        bundle = load_bundle(cfg)
        timings["decode"].append(time.perf_counter() - t0)
        return bundle

    def timed_predict(method_, images, *args, **kwargs):
        t0 = time.perf_counter()
        out = predict_images(method_, images, *args, **kwargs)
        timings["predict"].append(time.perf_counter() - t0)
        timings["predict_images"].append(len(images))
        return out

    method_cls.update, runner.load_bundle, predict.predict_images = timed_update, timed_load, timed_predict
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve(build_config(None, {
            "method": method, "data.name": "fairface", "data.root": str(data_root), "data.image_size": size,
            "data.cache_dir": f"{tmp}/cache", "data.max_train_samples": batch_size * (steps + 1),
            "backbone.pretrained": False, "train.epochs": 1, "train.batch_size": batch_size, "train.device": "cpu",
            "train.workers": 0,
        }))
        t0 = time.perf_counter()
        runner.execute(cfg, Path(tmp) / "runs")
        wall = time.perf_counter() - t0
    timed = timings["update"][1:]  # the first step warms up
    eval_s = sum(timings["predict"]) / max(1, sum(timings["predict_images"]))
    return {
        "method": method, "image_size": size, "batch_size": batch_size, "threads": threads,
        "train_s_per_batch": sum(timed) / len(timed), "train_batches_timed": len(timed),
        "eval_s_per_image": eval_s, "eval_images_timed": sum(timings["predict_images"]),
        "decode_s": timings["decode"][0], "run_wall_s": wall,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "amp": cfg.train.amp, "transform": cfg.train.transform,
    }


def extrapolate(row: dict[str, Any]) -> dict[str, float]:
    from fairbench.pipeline import decode_size

    side = decode_size(row["image_size"], row.get("transform"))
    train = FAIRFACE["train"] / row["batch_size"] * row["train_s_per_batch"]
    val = FAIRFACE["val"] * row["eval_s_per_image"]
    return {"epoch_h": (train + val) / 3600, "train_h": train / 3600, "val_min": val / 60,
            "test_min": FAIRFACE["test"] * row["eval_s_per_image"] / 60,
            # the decoded-image cache on disk (memory-mapped: its pages count in RSS while they are read)
            "cache_gib": (FAIRFACE["train"] + FAIRFACE["val"] + FAIRFACE["test"]) * side ** 2 * 3 / 2**30}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=SAMPLE, help=f"a FairFace-format folder (default {SAMPLE})")
    p.add_argument("--methods", default="erm,fineface")
    p.add_argument("--sizes", default="224,448")
    p.add_argument("--steps", type=int, default=2, help="timed training batches after one warm-up (default 2)")
    p.add_argument("--batch-size", type=int, default=16, help="the paper's 16 (default)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: fairbench's default)")
    p.add_argument("--json", type=Path, metavar="FILE")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--merge", type=Path, nargs="+", metavar="JSON", help="combine earlier reports (re-extrapolated)")
    args = p.parse_args(argv)
    if args.threads is None:
        from fairbench.compute import default_threads

        args.threads = default_threads()
    if args.merge:
        reports = [json.loads(path.read_text()) for path in args.merge]
        merged = {**reports[0], "command": [r["command"] for r in reports],
                  "rows": [{**row, "extrapolated": extrapolate(row)} for r in reports for row in r["rows"]]}
        text = json.dumps(merged, indent=2) + "\n"
        if args.json:
            args.json.write_text(text)
        else:
            print(text)
        return 0
    if args.one:
        row = measure_one(args.one[0], int(args.one[1]), args.data_root, args.steps, args.batch_size, args.threads)
        print(json.dumps(row))
        return 0
    if not (args.data_root / "fairface_label_train.csv").is_file():
        print(f"no FairFace-format folder at {args.data_root}; pass --data-root", file=sys.stderr)
        return 2
    rows = []
    for method in args.methods.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"{method} {size} px ...", file=sys.stderr, flush=True)
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, __file__, "--one", method, str(size), "--data-root", str(args.data_root),
                                  "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["loadavg_1min_before"] = load
            row["loadavg_1min_after"] = os.getloadavg()[0]
            row["extrapolated"] = extrapolate(row)
            rows.append(row)
            e = row["extrapolated"]
            print(f"  train {row['train_s_per_batch']:.2f} s/batch, eval {row['eval_s_per_image'] * 1e3:.0f} ms/image, "
                  f"peak RSS {row['peak_rss_gib']:.2f} GiB -> FairFace epoch ~{e['epoch_h']:.1f} h", file=sys.stderr)
    import torch

    report = {"command": "python benchmarks/cpu_real_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_cores": len(os.sched_getaffinity(0)),
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "python": platform.python_version(), "fairface_sizes": FAIRFACE, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
