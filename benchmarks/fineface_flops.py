"""FLOPs of one FineFACE training iteration with and without full forwards in the shallow
experts' steps (``full_forward_for_shallow_experts``), and of one ERM step for scale.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls, forward
and backward; not BatchNorm, elementwise ops or the crops) on the ``meta`` device: the count
depends on the shapes only, so no arithmetic runs and any machine gives the same numbers.

    python benchmarks/fineface_flops.py                                   # ResNet-50, 224 px, batch 8
    python benchmarks/fineface_flops.py --image-size 448 --batch-size 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import count_flops, make_batch, make_method  # noqa: E402


def measure(backbone: str, image_size: int, batch_size: int, device: str = "meta") -> tuple[dict[str, float], dict]:
    """FLOPs per iteration, and the expert widths FineFACE got (EXPERT_WIDTH_RULE on ``backbone``)."""
    dev = torch.device(device)
    batch = make_batch(batch_size, image_size, 2, dev, channels_last=True)
    out, widths = {}, {}
    for label, hparams in (("fineface full forwards (default)", {"full_forward_for_shallow_experts": True}),
                           ("fineface truncated forwards", {"full_forward_for_shallow_experts": False}),
                           ("erm (one step)", None)):
        method = make_method("fineface" if hparams is not None else "erm", backbone=backbone, image_size=image_size,
                             batch_size=batch_size, device=dev, hparams=hparams)
        out[label] = count_flops(lambda: method.update(batch))
        if hparams is not None:
            widths = {k: getattr(method.hparams, k) for k in ("expert_width", "expert_out")}
    return out, widths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="meta", help="meta (default: shapes only) or cpu")
    p.add_argument("--json", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    flops, widths = measure(args.backbone, args.image_size, args.batch_size, args.device)
    full, cut = flops["fineface full forwards (default)"], flops["fineface truncated forwards"]
    result = {"backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size,
              "expert_widths": widths,
              "gflop_per_iteration": {k: round(v / 1e9, 1) for k, v in flops.items()},
              "truncated_saves": round(1 - cut / full, 4),
              "fineface_over_erm": round(full / flops["erm (one step)"], 1), "torch": torch.__version__}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
