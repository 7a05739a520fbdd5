"""Summarise ``benchmarks/job_overhead_paired.sh``'s runs: per variant and round, each job's time
breakdown (``metrics.json`` ``timing``), its overhead (the job's time less its training updates;
also less process startup, which a suite's warm worker does not pay), and what it trained and
chose (FLOPs, selected epoch, test worst group), then the medians and the ratios of this checkout's
and ``validate_every=3``'s overhead to the baseline's, round by round.

Run: python benchmarks/job_overhead_summary.py OUT > OUT/summary.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def job(metrics: dict) -> dict:
    timing, phases = metrics["timing"], metrics["timing"]["phases_s"]
    overhead = timing["total_s"] - phases.get("training", 0.0)
    return {"total_s": timing["total_s"], "phases_s": phases, "overhead_s": round(overhead, 3),
            "overhead_warm_s": round(overhead - phases.get("startup", 0.0), 3),
            "train_flops": metrics["cost"]["train_flops"], "selected_epoch": metrics["selection"]["selected_epoch"],
            "test_worst_group_accuracy": metrics["test"]["worst_group_accuracy"]}


def main(out: Path) -> dict:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(out.glob("runs/*/*/metrics.json")):
        variant, round_ = path.parent.parent.name.rsplit("-", 1)
        runs.setdefault(variant, {})[int(round_)] = job(json.loads(path.read_text()))
    summary = {"jobs": runs, "median": {}, "ratio_to_baseline": {}}
    for variant, rounds in runs.items():
        summary["median"][variant] = {
            key: statistics.median(r[key] if key != "validation_s" else r["phases_s"].get("validation", 0.0)
                                   for r in rounds.values())
            for key in ("total_s", "overhead_s", "overhead_warm_s", "validation_s")}
        if variant != "baseline" and "baseline" in runs:
            pairs = [(r, runs["baseline"][k]) for k, r in rounds.items() if k in runs["baseline"]]
            summary["ratio_to_baseline"][variant] = {
                key: statistics.median(a[key] / b[key] for a, b in pairs)
                for key in ("overhead_s", "overhead_warm_s", "total_s")}
    return summary


if __name__ == "__main__":
    json.dump(main(Path(sys.argv[1])), sys.stdout, indent=1)
    print()
