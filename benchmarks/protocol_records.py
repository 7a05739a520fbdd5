"""Per-run records of a protocol suite, for a reader who wants to check its tables.

    python benchmarks/protocol_records.py benchmarks/quickstart.toml --runs-dir runs/protocol \
        --output benchmarks/results/protocol-quickstart-cpu

writes into OUTPUT:

- ``per-run.csv``: one row per job of the suite: method, scenario, seed, search trial and the
  values it drew, validation and test metrics of the trained model, the epochs the budget gave,
  its cost (optimizer steps, training FLOPs, training seconds, peak memory), the last training
  loss, device, precision and torch threads, and for each selection rule whether it keeps this
  trial for its (method, seed);
- ``curves-<method>[-<dataset>].png``: training loss and validation accuracy per epoch of every run
  of the method (per dataset when it ran on several) (``fairbench plot curves``), to see where each stands when its budget ends.

The tables themselves come from ``fairbench compare --suite FILE --layout protocol``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from known_answers import last_train_loss  # this folder's script: run as a script, it is on the path

RULES = ("accuracy", "worst_group_accuracy", "test_oracle")


def per_run(suite_file: Path, runs_dir: Path) -> pd.DataFrame:
    from fairbench.results.layouts.protocol import chosen_trials
    from fairbench.results.reporting import load_selected
    from fairbench.suites.suite import Suite

    suite = Suite.load(suite_file)
    by_id = {job.run_id: job for job in suite.resolve() if job.run_id}
    # as `fairbench compare --suite` reads them: with their trial numbers, which break ties between trials
    done = [r for r in load_selected(runs_dir, suite)[0] if r.run_id in by_id]
    # rule -> {run id of the kept trial: the epoch the rule chose inside it (from 1)}
    kept = {rule: {chosen.kept.record.run_id: chosen.kept.epoch for seeds in chosen_trials(done, rule).values()
                   for chosen in seeds.values()} for rule in RULES}
    rows: list[dict[str, Any]] = []
    for rec in done:
        job, metrics = by_id[rec.run_id], rec.metrics()
        env = json.loads((rec.path / "environment.json").read_text())
        cost = metrics.get("cost") or {}
        drawn = {k: v for k, v in job.spec.items() if k not in ("method", "train.seed", "data.name", "data.target",
                                                                "train.budget_flops", "train.budget_steps", "selection")}
        val, test = metrics["val"], metrics["test"]
        rows.append({
            "method": rec.method, "dataset": rec.dataset, "seed": rec.seed, "trial": job.trial,
            "drawn": json.dumps(drawn, sort_keys=True),
            "val_accuracy": val["accuracy"], "val_worst_group_accuracy": val["worst_group_accuracy"],
            "test_accuracy": test["accuracy"], "test_worst_group_accuracy": test["worst_group_accuracy"],
            "test_dob": test["dob"],
            "test_group_accuracy": json.dumps(test["group_accuracy"], sort_keys=True),
            "epochs": rec.config["train"]["epochs"],
            "optimizer_steps": cost.get("optimizer_steps"), "train_flops": cost.get("train_flops"),
            "train_seconds": cost.get("train_seconds"), "peak_memory_bytes": cost.get("peak_memory_bytes"),
            "last_train_loss": last_train_loss(rec.path),
            # where the job's wall time went (fairbench.training.timing; empty for runs recorded before it)
            "job_seconds": (metrics.get("timing") or {}).get("total_s"),
            **{f"{phase}_seconds": s for phase, s in ((metrics.get("timing") or {}).get("phases_s") or {}).items()},
            "device": env.get("device"), "precision": rec.precision, "torch_threads": env.get("torch_threads"),
            "torch": env.get("packages", {}).get("torch"), "git_revision": env.get("git_revision"),
            **{f"kept_by_{rule}": rec.run_id in kept[rule] for rule in RULES},
            **{f"epoch_by_{rule}": kept[rule].get(rec.run_id) for rule in RULES},
            "run": rec.run_id,
        })
    missing = sorted(set(by_id) - {r["run"] for r in rows})
    if missing:
        print(f"{len(missing)} job(s) of the suite have no finished run: {', '.join(missing[:5])}"
              f"{' ...' if len(missing) > 5 else ''}", file=sys.stderr)
    return pd.DataFrame(rows).sort_values(["dataset", "method", "seed", "trial"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--no-curves", action="store_true")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    frame = per_run(args.suite, args.runs_dir)
    frame.to_csv(args.output / "per-run.csv", index=False, float_format="%.6g")
    print(f"{len(frame)} runs -> {args.output / 'per-run.csv'}")
    if not args.no_curves:
        from fairbench.cli import main as cli

        several = frame.groupby("method")["dataset"].nunique()
        for (method, dataset), runs in frame.groupby(["method", "dataset"]):
            paths = [str(args.runs_dir / run) for run in runs["run"]]
            name = f"curves-{method}-{dataset}.png" if several[method] > 1 else f"curves-{method}.png"
            cli(["plot", "curves", *paths, "--output", str(args.output / name)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
