"""Collect the UTKFace CPU recipe measurements (benchmarks/results/utkface-cpu/recipe/).

    python benchmarks/utkface_recipe.py RUNS_DIR OUT_DIR [--cpu-seconds RUN_ID=SECONDS ...]

Copies each run's aggregate records (config, metrics, history, environment: numbers only, no
predictions, no file names, no image of the faces) into OUT_DIR/runs/<run id>/, writes one row per
run to OUT_DIR/recipe.csv, and the per-group test table (race x gender, with supports) of each run
to OUT_DIR/groups.csv. CPU seconds come from `/usr/bin/time -v` (user time) when given.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

RECORDS = ("config.json", "metrics.json", "history.json", "environment.json")


def _last_train_loss(history: list[dict]) -> float:
    return history[-1]["train"]["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cpu-seconds", nargs="*", default=[], metavar="RUN_ID=SECONDS")
    args = parser.parse_args()
    cpu = {k: float(v) for k, v in (p.split("=") for p in args.cpu_seconds)}
    rows, groups = [], []
    for run in sorted(p for p in args.runs_dir.iterdir() if (p / "metrics.json").exists()):
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        history = json.loads((run / "history.json").read_text())
        target = args.out_dir / "runs" / run.name
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORDS:
            shutil.copyfile(run / name, target / name)
        test, val = metrics["test"], metrics["val"]
        rows.append({
            "run_id": run.name, "method": config["method"], "image_size": config["data"]["image_size"],
            "epochs": config["train"]["epochs"], "batch_size": config["train"]["batch_size"],
            "lr": config["train"]["lr"], "seed": config["train"]["seed"],
            "last_train_loss": round(_last_train_loss(history), 4),
            "last_val_accuracy": round(history[-1]["val"]["accuracy"], 2),
            "best_val_accuracy": round(max(h["val"]["accuracy"] for h in history), 2),
            "selected_val_accuracy": round(val["accuracy"], 2),
            "test_accuracy": round(test["accuracy"], 2),
            "test_worst_group": round(test["worst_group_accuracy"], 2),
            "test_dob": round(test["dob"], 2), "train_flops": metrics["cost"]["train_flops"],
            "train_seconds_wall": round(metrics["cost"]["train_seconds"], 1),
            "cpu_seconds_user": cpu.get(run.name),
        })
        for group, accuracy in test["group_accuracy"].items():
            support = test["group_support"][group]
            groups.append({"run_id": run.name, "group": group, "n": support["n"] if isinstance(support, dict) else support,
                           "accuracy": round(accuracy, 2)})
    pd.DataFrame(rows).to_csv(args.out_dir / "recipe.csv", index=False)
    pd.DataFrame(groups).to_csv(args.out_dir / "groups.csv", index=False)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
