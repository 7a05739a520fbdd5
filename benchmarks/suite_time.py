"""Where a suite's wall time went, from its per-run records (``benchmarks/protocol_records.py``'s
``per-run.csv``) and the suite's measured start and end.

    python benchmarks/suite_time.py benchmarks/results/quickstart-protocol-v2-cpu/per-run.csv \
        --wall-seconds 5400 --workers 2

A suite stopped and resumed (a session's end) ran in segments: ``--segments FILE`` (one line per
segment, its start and end in Unix seconds) sums them instead of ``--wall-seconds``.

Prints (and with ``--output``, writes as JSON): the suite's wall time against its training time
divided by the workers (and against its training and evaluation time: validation and test
predictions), each phase's median and total over the jobs (``fairbench.training.timing``), and the
overhead per job (the job's wall time less its training updates; and less its evaluation too),
median and quartiles.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

PHASES = ("startup", "data", "setup", "budget_probe", "training", "flop_counting", "validation", "test", "writing")


def breakdown(frame: pd.DataFrame, wall_seconds: float, workers: int) -> dict:
    timed = frame[frame["job_seconds"].notna()]
    overhead = timed["job_seconds"] - timed["training_seconds"]
    without_validation = overhead - timed["validation_seconds"]
    # validation and test predictions are compute the protocol asks for (every rule scores every
    # validated epoch), not overhead around it: the rest is what a harness can cut
    evaluation = timed["validation_seconds"] + timed["test_seconds"]
    without_evaluation = overhead - evaluation
    return {
        "jobs": int(len(frame)), "jobs_timed": int(len(timed)), "workers": workers,
        "suite_wall_s": wall_seconds,
        "sum_job_s": float(timed["job_seconds"].sum()),
        "sum_training_s": float(timed["training_seconds"].sum()),
        "wall_over_training_per_worker": wall_seconds / (timed["training_seconds"].sum() / workers),
        "wall_over_jobs_per_worker": wall_seconds / (timed["job_seconds"].sum() / workers),
        "sum_evaluation_s": float(evaluation.sum()),
        "wall_over_training_and_evaluation_per_worker":
            wall_seconds / ((timed["training_seconds"].sum() + evaluation.sum()) / workers),
        "overhead_per_job_s": {"median": float(overhead.median()), "q25": float(overhead.quantile(0.25)),
                               "q75": float(overhead.quantile(0.75))},
        "overhead_per_job_without_validation_s": {"median": float(without_validation.median())},
        "overhead_per_job_without_evaluation_s": {"median": float(without_evaluation.median()),
                                                  "q25": float(without_evaluation.quantile(0.25)),
                                                  "q75": float(without_evaluation.quantile(0.75))},
        "phases": {p: {"median_s": float(timed[f"{p}_seconds"].median()), "total_s": float(timed[f"{p}_seconds"].sum())}
                   for p in PHASES if f"{p}_seconds" in timed},
    }


def segments_seconds(path: Path) -> float:
    """The summed length of the segments in ``path`` ('start end' per line; '#' starts a comment)."""
    total = 0.0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or float(fields[1]) < float(fields[0]):
            raise SystemExit(f"{path}:{number}: expected 'start end' in Unix seconds, end after start; got {line!r}")
        total += float(fields[1]) - float(fields[0])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("per_run", type=Path)
    wall = parser.add_mutually_exclusive_group(required=True)
    wall.add_argument("--wall-seconds", type=float, help="the suite's measured wall time")
    wall.add_argument("--segments", type=Path, help="a file of 'start end' lines (Unix seconds), one per segment")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    seconds = args.wall_seconds if args.segments is None else segments_seconds(args.segments)
    out = breakdown(pd.read_csv(args.per_run), seconds, args.workers)
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
