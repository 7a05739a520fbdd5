"""Collect the quick-start spread runs into runs.csv: one row per `fairbench run erm` of
measure_spread.sh, read from the run's metrics.json / environment.json / dataset.json and, for
the process's CPU time, the /usr/bin/time file measure_spread.sh wrote beside it.

Usage: python collect.py /tmp/h8 > runs.csv
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

FIELDS = ["seed", "threads", "overall_pct", "worst_group_pct", "train_seconds", "process_cpu_seconds",
          "process_wall_seconds", "selected_epoch", "data_seed", "run_id", "torch", "git_revision"]


def cpu_times(path: Path) -> dict[str, float]:
    """``cpu_user=.. cpu_sys=.. wall=..`` (the -f format of measure_spread.sh) as numbers."""
    pairs = dict(item.split("=") for item in path.read_text().split() if "=" in item)
    return {k: float(v) for k, v in pairs.items()}


def main(base: Path) -> None:
    out = csv.DictWriter(sys.stdout, FIELDS, lineterminator="\n")
    out.writeheader()
    rows = []
    for runs in sorted(base.glob("runs-*-*")):
        seed, threads = (int(x) for x in runs.name.split("-")[1:])
        for run in sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()):
            metrics = json.loads((run / "metrics.json").read_text())
            env = json.loads((run / "environment.json").read_text())
            data = json.loads((run / "dataset.json").read_text())
            assert env["torch_threads"] == threads, f"{run}: ran on {env['torch_threads']} threads"
            t = cpu_times(base / f"time-{seed}-{threads}.txt")
            rows.append({
                "seed": seed, "threads": threads,
                "overall_pct": f"{metrics['test']['accuracy']:.2f}",
                "worst_group_pct": f"{metrics['test']['worst_group_accuracy']:.1f}",
                "train_seconds": f"{metrics['cost']['train_seconds']:.1f}",
                "process_cpu_seconds": f"{t['cpu_user'] + t['cpu_sys']:.1f}",
                "process_wall_seconds": f"{t['wall']:.1f}",
                "selected_epoch": metrics["selection"]["selected_epoch"],
                "data_seed": data["data_seed"], "run_id": run.name,
                "torch": env["packages"]["torch"], "git_revision": env["git_revision"],
            })
    for row in sorted(rows, key=lambda r: (r["threads"], r["seed"])):
        out.writerow(row)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
