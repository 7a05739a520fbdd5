#!/usr/bin/env python
"""Training and evaluation throughput of ERM and FineFACE on one GPU (the paper's setting:
ResNet-50, 448 px, batch 16), fp32 vs bf16 autocast, channels_last, optional torch.compile.

For each (method, precision) a fresh model is built (random init: throughput does not depend
on the weights), then for "train" (one ``update``: ERM 1 SGD step, FineFACE N + 2 = 5) and
"eval" (one ``predict``: FineFACE 2 forwards + CAMs + crop) it reports images/s, ms per
batch, model FLOPs per batch (``torch.utils.flop_counter.FlopCounterMode`` on one eager
step: convolutions and matmuls, not BN / elementwise / grid_sample) and the achieved TFLOP/s.

    python benchmarks/gpu_throughput.py                       # H100 / H200: the full table
    python benchmarks/gpu_throughput.py --compile --json out.json
    python benchmarks/gpu_throughput.py --device cpu --steps 1 --image-size 64 --batch-size 2   # smoke test

Without CUDA (and without ``--device cpu``) it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

METHODS = ("erm", "fineface")
PRECISIONS = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (smoke test)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma separated (default: erm,fineface)")
    p.add_argument("--precision", default=None,
                   help="comma separated among fp32,bf16 (default: both on CUDA, fp32 on the CPU)")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3, 1 on the CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="model and input in channels_last (default; the runner's input layout)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (warm-up then compiles)")
    p.add_argument("--fineface-hparams", default="{}", metavar="JSON",
                   help='FineFACE hyperparameters, e.g. \'{"full_forward_for_shallow_experts": false}\' (the faster variant)')
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose among {', '.join(METHODS)}")
    on_cpu = args.device == "cpu"
    args.precision = [s.strip() for s in (args.precision or ("fp32" if on_cpu else "fp32,bf16")).split(",")]
    bad = [s for s in args.precision if s not in PRECISIONS]
    if bad:
        p.error(f"unknown precision(s) {bad}; choose among {', '.join(PRECISIONS)}")
    if args.warmup is None:
        args.warmup = 1 if on_cpu else 3
    for name in ("steps", "batch_size", "image_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.batch_size < 2:
        p.error("--batch-size must be at least 2 (FineFACE's heads use BatchNorm1d)")
    try:
        args.fineface_hparams = json.loads(args.fineface_hparams)
    except json.JSONDecodeError as exc:
        p.error(f"--fineface-hparams is not JSON: {exc}")
    return args


def make_method(name: str, *, backbone: str = "resnet50", image_size: int = 448, batch_size: int = 16,
                num_classes: int = 2, device: str | torch.device = "cpu", hparams: dict[str, Any] | None = None):
    """A method as the runner builds it (paper learning rates), random init, in train mode."""
    from fairbench import registry
    from fairbench.backbones import create_backbone
    from fairbench.methods.base import MethodContext, TrainConfigView

    cls = registry.methods.get(name)
    ctx = MethodContext(
        num_classes=num_classes,
        train=TrainConfigView(epochs=25, batch_size=batch_size, lr=0.002, backbone_lr=0.0002, momentum=0.9,
                              weight_decay=5e-4),
        steps_per_epoch=1,
        image_size=image_size,
        device=torch.device(device),
        make_backbone=lambda: create_backbone(backbone, False),
        train_targets=np.zeros(batch_size, dtype=np.int64),
    )
    method = cls(ctx, cls.Hparams.model_validate(hparams or {})).to(device)
    method.train()
    return method


def make_batch(batch_size: int, image_size: int, num_classes: int, device: torch.device, channels_last: bool):
    from fairbench.methods.base import Batch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, image_size, image_size, generator=g) * 2 - 1  # normalised range
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    return Batch(x=x.to(device), y=y.to(device), index=torch.arange(batch_size, device=device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def step_function(method, batch, mode: str, precision: str, device: torch.device):
    """One training iteration (``update``) or one evaluation batch (``predict``)."""
    if mode == "train":
        def step():
            method.train()
            with _autocast(device, precision):
                method.update(batch)
    else:
        def step():
            method.eval()
            with torch.inference_mode(), _autocast(device, precision):
                method.predict(batch.x)
    return step


def time_step(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _compile(method) -> None:
    for module in method.children():
        if any(True for _ in module.parameters()):
            module.compile()  # in place: parameter names unchanged


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = []
    for name in args.methods:
        for precision in args.precision:
            torch.manual_seed(0)
            method = make_method(name, backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size,
                                 num_classes=args.num_classes, device=device,
                                 hparams=args.fineface_hparams if name == "fineface" else None)
            if args.channels_last:
                method = method.to(memory_format=torch.channels_last)
            batch = make_batch(args.batch_size, args.image_size, args.num_classes, device, args.channels_last)
            steps = {mode: step_function(method, batch, mode, precision, device) for mode in ("train", "eval")}
            # FLOPs of one eager step (also warms up cuDNN); then compile, if asked
            flops = {mode: count_flops(step) for mode, step in steps.items()}
            if args.compile:
                _compile(method)
            for mode, step in steps.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds = time_step(step, args.steps, max(args.warmup, 2) if args.compile else args.warmup, device)
                row = {"method": name, "mode": mode, "precision": precision, "ms_per_step": seconds * 1e3,
                       "images_per_s": args.batch_size / seconds, "flops_per_step": flops[mode],
                       "tflops_per_s": flops[mode] / seconds / 1e12}
                if device.type == "cuda":
                    row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                results.append(row)
                print(f"  {name:9s} {mode:5s} {precision}: {row['images_per_s']:.1f} images/s", file=sys.stderr,
                      flush=True)
            del method, steps
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"config": _config(args, device), "results": results}


def _config(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    cfg.update(torch=torch.__version__, python=platform.python_version(),
               device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               cpu_threads=torch.get_num_threads())
    if device.type == "cuda":
        cfg.update(cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return cfg


def format_table(report: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [[r["method"], r["mode"], r["precision"], f"{r['images_per_s']:.1f}", f"{r['ms_per_step']:.1f}",
             f"{r['flops_per_step'] / 1e9:.1f}", f"{r['tflops_per_s']:.2f}",
             f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else "-"]
            for r in report["results"]]
    text = tabulate(rows, headers=["method", "mode", "precision", "images/s", "ms/batch", "GFLOP/batch", "TFLOP/s",
                                   "peak GiB"], tablefmt="simple")
    by = {(r["method"], r["mode"], r["precision"]): r for r in report["results"]}
    ratios = []
    for mode in ("train", "eval"):
        for precision in PRECISIONS:
            erm, ff = by.get(("erm", mode, precision)), by.get(("fineface", mode, precision))
            if erm and ff:
                ratios.append(f"FineFACE / ERM time per image, {mode} {precision}: "
                              f"{erm['images_per_s'] / ff['images_per_s']:.2f}x")
    c = report["config"]
    head = (f"{c['device_name']} | {c['backbone']} {c['image_size']} px, batch {c['batch_size']} | "
            f"channels_last={c['channels_last']} compile={c['compile']} | torch {c['torch']}")
    return "\n".join([head, text, *ratios])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_throughput: CUDA is not available on this machine; this benchmark measures GPU throughput.\n"
              "For a quick CPU smoke run: --device cpu --steps 1 --image-size 64 --batch-size 2", file=sys.stderr)
        return 2
    report = run(args)
    print(format_table(report))
    if args.json:
        from fairbench.runs.store import atomic_write_json

        atomic_write_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
