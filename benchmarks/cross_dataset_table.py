"""The cross-dataset table of a protocol suite, per selection rule: for each row of the protocol
table, the models each rule kept (one per seed: the trial and epoch it chose on the training
dataset's validation split) scored on another dataset, from their stored evaluations
(``evaluations/<dataset>-<split>/``, or ``.../epoch<N>/`` when the rule kept another epoch than the
run's own).

    python benchmarks/cross_dataset_table.py benchmarks/utkface-cpu.toml --runs-dir RUNS --dataset fairface

Two kinds of interval, because a small evaluation set is noisy in two ways: over seeds (the mean's
95 % t-interval) and over the evaluated images (each kept model's own 95 % percentile bootstrap
interval of accuracy over the images, 1,000 resamples; the column gives their median width).
Markdown on stdout; ``--output FILE.json`` also writes every kept model's numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd

RULES = ("accuracy", "worst_group_accuracy", "test_oracle")


def finished_runs(suite_file: Path, runs_dir: Path) -> list:
    """The suite's finished runs, read once for every rule, as `fairbench compare --suite` reads them
    (with their trial numbers, which break ties between equally scored trials)."""
    from fairbench.results.reporting import load_selected
    from fairbench.suites.suite import Suite

    return load_selected(runs_dir, Suite.load(suite_file))[0]


def kept_models(done: list, dataset: str, rule: str) -> list[dict]:
    from fairbench.metrics import accuracy, bootstrap_ci
    from fairbench.results.layouts.protocol import as_chosen, budget_label, chosen_trials

    out = []
    for (_, method, budget), seeds in sorted(chosen_trials(done, rule).items(), key=lambda kv: kv[0][1]):
        for seed, chosen in sorted(seeds.items()):
            record = as_chosen(chosen.kept)
            evaluated = [e for e in record.evaluations() if e.dataset == dataset]
            row = {"rule": rule, "method": method, "budget": budget_label(budget), "seed": seed,
                   "run_id": record.run_id, "epoch": chosen.kept.epoch, "evaluated": bool(evaluated)}
            if evaluated and evaluated[0].predictions is not None:
                ev = evaluated[0]
                frame = pd.read_csv(ev.predictions, keep_default_na=False)
                y, pred, groups = frame["target"].to_numpy(), frame["pred"].to_numpy(), frame["group"].to_numpy()
                ci = bootstrap_ci(accuracy, y, pred, groups, n_resamples=1000, seed=0)
                row.update(images=len(frame), accuracy=ev.report["accuracy"],
                           worst_group_accuracy=ev.report["worst_group_accuracy"],
                           accuracy_bootstrap=[ci.low, ci.high])
            out.append(row)
    return out


def _mean_interval(values: list[float]) -> str:
    from fairbench.metrics import mean_t_interval

    mean, half, n = mean_t_interval(values)
    return f"{mean:.2f} ± {half:.2f}" if n > 1 else (f"{mean:.2f}" if n else "n/a")


def markdown(models: list[dict], dataset: str) -> str:
    lines = []
    for rule in RULES:
        rows = [m for m in models if m["rule"] == rule]
        if not rows:
            continue
        lines += [f"### Kept by the `{rule}` rule, scored on {dataset}", "",
                  "| method | seeds evaluated | images | accuracy % (seeds' 95 % t) | worst group % (seeds' 95 % t) "
                  "| one model's accuracy interval over the images, median width pp | kept epochs |",
                  "|---|---|---|---|---|---|---|"]
        keys = list(dict.fromkeys((m["method"], m["budget"]) for m in rows))
        for method, budget in keys:
            group = [m for m in rows if (m["method"], m["budget"]) == (method, budget)]
            scored = [m for m in group if "accuracy" in m]
            widths = [m["accuracy_bootstrap"][1] - m["accuracy_bootstrap"][0] for m in scored]
            name = f"{method} ({budget})" if sum(k[0] == method for k in keys) > 1 else method
            if not scored:
                lines.append(f"| {name} | 0/{len(group)} | 0 | n/a | n/a | n/a | |")
                continue
            epochs = sorted({m["epoch"] for m in group})
            lines.append(f"| {name} | {len(scored)}/{len(group)} | {scored[0]['images']} | "
                         f"{_mean_interval([m['accuracy'] for m in scored])} | "
                         f"{_mean_interval([m['worst_group_accuracy'] for m in scored])} | "
                         f"{statistics.median(widths):.1f} | {epochs[0]}-{epochs[-1]} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--dataset", required=True, help="the evaluated dataset, e.g. fairface")
    parser.add_argument("--output", type=Path, help="also write every kept model's numbers as JSON")
    args = parser.parse_args()
    done = finished_runs(args.suite, args.runs_dir)
    models = [m for rule in RULES for m in kept_models(done, args.dataset, rule)]
    print(markdown(models, args.dataset))
    if args.output:
        args.output.write_text(json.dumps(models, indent=1) + "\n")


if __name__ == "__main__":
    main()
