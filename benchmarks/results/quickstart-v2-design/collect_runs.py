"""One CSV row per measurement run of the quickstart v2 design (README.md here).

    python benchmarks/results/quickstart-v2-design/collect_runs.py /tmp/h9 > benchmarks/results/quickstart-v2-design/runs.csv

Reads each ``<runs-dir>/<config>/<run id>/`` (config.json, history.json, metrics.json) and the
``<runs-dir>/<config>.time`` that ``/usr/bin/time -v`` wrote beside it: the CPU time (user + sys)
of the whole ``fairbench run`` process, the cost this design is about (wall time was shared).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path


def cpu_seconds(time_file: Path) -> float:
    text = time_file.read_text()
    return sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", text).group(1)) for kind in ("User", "System"))


def row(config: str, run: Path, time_file: Path) -> dict[str, object]:
    cfg = json.loads((run / "config.json").read_text())
    history = json.loads((run / "history.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    test, rules, timing = metrics["test"], metrics["rules"], metrics["timing"]["phases_s"]
    val_acc = [e["val"]["accuracy"] for e in history]
    return {
        "config": config, "method": cfg["method"], "dataset": cfg["data"]["name"], "seed": cfg["train"]["seed"],
        "n_train": cfg["data"]["options"]["n_train"], "n_test": cfg["data"]["options"]["n_test"],
        "image_size": cfg["data"]["image_size"], "batch_size": cfg["train"]["batch_size"], "lr": cfg["train"]["lr"],
        "epochs": len(history), "updates": metrics["cost"]["updates"], "train_flops": metrics["cost"]["train_flops"],
        "last_train_loss": round(history[-1]["train"]["loss"], 4),
        "val_acc_last": round(val_acc[-1], 2), "val_acc_max_last5": round(max(val_acc[-5:]), 2),
        "val_acc_min_last5": round(min(val_acc[-5:]), 2),
        "val_worst_group_last": round(history[-1]["val"]["worst_group_accuracy"], 2),
        "test_acc_last": round(test["accuracy"], 2),
        "test_best_group_last": round(test["max_group_accuracy"], 2),
        "test_worst_group_last": round(test["worst_group_accuracy"], 2),
        "plusV_epoch": rules["worst_group_accuracy"]["epoch"],
        "plusV_test_worst_group": round(rules["worst_group_accuracy"]["test"]["worst_group_accuracy"], 2),
        "cpu_s": round(cpu_seconds(time_file), 1), "wall_s": metrics["timing"]["total_s"],
        **{f"wall_{phase}_s": round(seconds, 1) for phase, seconds in timing.items()},
    }


def main(runs_dir: Path) -> None:
    rows = [row(config.name, run.parent, runs_dir / f"{config.name}.time")
            for config in sorted(p for p in runs_dir.iterdir() if p.is_dir() and (runs_dir / f"{p.name}.time").exists())
            for run in sorted(config.glob("*/metrics.json"))]
    out = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    out.writeheader()
    out.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
