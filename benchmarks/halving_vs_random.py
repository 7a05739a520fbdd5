"""Successive halving against random search at equal compute, from the records of one runs folder.

    python benchmarks/halving_vs_random.py --runs-dir runs/quickstart \
        --output benchmarks/results/halving-vs-random-cpu

Random search's arm is ``benchmarks/quickstart.toml`` (trials 0-4, each trained in full); the halving
arm is ``benchmarks/halving-vs-random.toml`` (18 trials, eta 3), run in the same runs folder, so its
trials 0-4 are the very runs random search trained. For every (method, seed) each arm keeps one
trial by the same validation rule (the epoch inside a trial too, as the protocol tables do):
random search among trials 0-4, halving among the trials that reached its last rung
(``suite-halving-vs-random/halving.json``). Compute is what each arm trains: random search every
trial's 30 epochs; halving every trial up to the last rung it reached (its training FLOPs per epoch
times those epochs), whether or not the run had been trained further for random search.

Writes ``per-seed.csv`` (one row per method, seed and arm) and ``summary.md`` (per method: the
kept trial's validation and test worst-group accuracy, mean and 95 % t-interval over seeds, the
paired difference halving - random, and the compute of each arm).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent
RANDOM_SUITE = ROOT / "quickstart.toml"
HALVING_SUITE = ROOT / "halving-vs-random.toml"


def _interval(values: list[float], difference: bool = False) -> str:
    from fairbench.metrics.uncertainty import mean_t_interval

    mean, half, n = mean_t_interval(values)
    if n < 2:
        return f"{mean:.2f}"
    if difference:  # signed, not clipped
        return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"
    return f"{mean:.2f} [{max(0.0, mean - half):.2f}, {min(100.0, mean + half):.2f}]"  # a % of images


def _kept(records: list, rule: str) -> dict[tuple[str, int], Any]:
    from fairbench.results.layouts.protocol import chosen_trials

    return {(variant[1], seed): chosen for variant, seeds in chosen_trials(records, rule).items()
            for seed, chosen in seeds.items()}


def compare(runs_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    from fairbench.runs.catalog import finished, load_records
    from fairbench.suites.suite import Suite

    halving = json.loads((runs_dir / "suite-halving-vs-random" / "halving.json").read_text())
    rule = halving["rungs"][0]["trials"][0]["rule"]
    halving_jobs = {j.run_id: j for j in Suite.load(HALVING_SUITE).resolve() if j.run_id}
    methods = {j.method for j in halving_jobs.values()}
    random_ids = {j.run_id for j in Suite.load(RANDOM_SUITE).resolve()
                  if j.run_id and j.method in methods and j.config.data.name == "synthface-spurious"}
    records, _ = load_records(runs_dir)
    done, _ = finished([r for r in records if r.run_id in random_ids | set(halving_jobs)])
    by_id = {r.run_id: r for r in done}
    last_rung = halving["rungs"][-1]
    survivors = [by_id[rid] for rid in last_rung["kept"] if rid in by_id]
    if len(survivors) < len(last_rung["kept"]):
        raise SystemExit("some trials of halving's last rung have not finished: run the halving suite to its end")
    # the epochs halving trained each trial: those of the last rung it took part in
    reached: dict[str, float] = {}
    for rung in halving["rungs"]:
        for trial in rung["trials"]:
            reached[trial["run_id"]] = rung["share"]
    arms = {"random": _kept([by_id[rid] for rid in random_ids], rule), "halving": _kept(survivors, rule)}
    rows = []
    for arm, kept in arms.items():
        for (method, seed), chosen in sorted(kept.items()):
            rec = chosen.kept.record
            if arm == "random":
                flops = sum((by_id[rid].cost() or {}).get("train_flops") or 0 for rid in random_ids
                            if by_id[rid].method == method and by_id[rid].seed == seed)
                trials = chosen.trials
            else:
                flops, trials = 0.0, 0
                for rid, share in reached.items():
                    job = halving_jobs[rid]
                    if job.method == method and job.seed == seed:
                        flops += _flops_up_to(runs_dir / rid, share)
                        trials += 1
            rows.append({"method": method, "seed": seed, "arm": arm, "rule": rule, "trials": trials,
                         "kept_trial": rec.trial, "kept_epoch": chosen.kept.epoch,
                         "val_worst_group_accuracy": chosen.kept.val["worst_group_accuracy"],
                         "test_worst_group_accuracy": chosen.kept.test["worst_group_accuracy"],
                         "test_accuracy": chosen.kept.test["accuracy"], "train_flops": flops, "run": rec.run_id})
    return pd.DataFrame(rows), halving


def _flops_up_to(run_dir: Path, share: float) -> float:
    """The training FLOPs a trial had spent when halving's rung ``share`` ended (the cumulative
    count its history records per epoch, passes such as JTT's identification included)."""
    from fairbench.suites.halving import epochs_at

    config = json.loads((run_dir / "config.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    upto = epochs_at(share, int(config["train"]["epochs"]))
    return next(h["cost"]["train_flops"] for h in history if h["epoch"] == upto - 1)


def summary(frame: pd.DataFrame, rule: str) -> str:
    lines = [f"# Successive halving vs random search at equal compute (rule: {rule})", "",
             "Per method: the kept trial's worst-group accuracy (%), mean [95 % t-interval] over seeds; "
             "the difference halving - random paired over seeds; training FLOPs per (method, seed), mean.", "",
             "| method | arm | trials | val worst group | test worst group | test accuracy | FLOPs per seed |",
             "|---|---|---|---|---|---|---|"]
    for method, rows in frame.groupby("method"):
        for arm in ("random", "halving"):
            r = rows[rows.arm == arm].sort_values("seed")
            lines.append(f"| {method} | {arm} | {int(r.trials.iloc[0])} | {_interval(list(r.val_worst_group_accuracy))} | "
                         f"{_interval(list(r.test_worst_group_accuracy))} | {_interval(list(r.test_accuracy))} | "
                         f"{r.train_flops.mean():.3g} |")
        pair = rows.pivot(index="seed", columns="arm", values="test_worst_group_accuracy").dropna()
        lines.append(f"| {method} | halving - random (paired, {len(pair)} seeds) | | | "
                     f"{_interval(list(pair.halving - pair.random), difference=True)} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    frame, halving = compare(args.runs_dir)
    args.output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.output / "per-seed.csv", index=False, float_format="%.6g")
    (args.output / "halving.json").write_text(json.dumps(halving, indent=1) + "\n")
    (args.output / "summary.md").write_text(summary(frame, frame.rule.iloc[0]))
    print((args.output / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
