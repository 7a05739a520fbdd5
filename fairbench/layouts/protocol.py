"""The ``protocol`` layout: one table per selection rule, the same rule for every row.

Runs of a protocol suite differ, per method and seed, only in their search trial (the keys the
search draws: ``hparams.*`` and the shared ``train.lr`` / ``backbone_lr`` / ``weight_decay`` /
``batch_size``, see :mod:`fairbench.search`). For each rule, each (method, seed) keeps the trial
that scores best on the rule's split (:mod:`fairbench.selection`), then the row shows the mean over
seeds of that trial's test metrics:

- ``accuracy``: validation accuracy, no group labels beyond the method's own needs;
- ``worst_group_accuracy``: validation worst-group accuracy ("+V");
- ``test_oracle``: test worst-group accuracy, an upper bound and never a result.

Within a run the checkpoint is the run's own (protocol suites use ``selection = "last"``, so the
trials are compared as trained, whatever the table's rule). Columns: mean [95 % t-interval,
clipped to the metric's range]; the paired difference of worst-group accuracy against ERM over the
seeds both have; the DoB noise floor (:mod:`fairbench.metrics.noise_floor`) of each row's test
split, with a DoB within it marked; and the training cost.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from fairbench.cost import format_flops
from fairbench.layouts.base import Layout, LayoutOptions
from fairbench.metrics.noise_floor import noise_floors
from fairbench.metrics.uncertainty import MIN_SEEDS_FOR_INTERVALS, clipped_t_interval, paired_difference
from fairbench.records import Record
from fairbench.registry import register_layout
from fairbench.search import TRAIN_SPACES
from fairbench.selection import get_rule
from fairbench.tables import CHANCE_MARGIN_PP, at_chance, method_needs

RULES = ("accuracy", "worst_group_accuracy", "test_oracle")
BASELINE = "erm"
#: keys a search varies: runs equal on every other key (but the seed) are trials of one another
_SEARCHED_TRAIN = {f"train.{k}" for space in TRAIN_SPACES.values() for k in space} | {"train.backbone_lr"}
_SEARCHED_TRAIN.add("train.eval_batch_size")  # follows the drawn batch size by default


_BUDGET_KEYS = ("train.budget_flops", "train.budget_steps")

#: a run's budget: (key, amount), or None for a run given epochs
Budget = tuple[str, float] | None


def _budget(record: Record) -> Budget:
    return next(((k, float(record.identity[k])) for k in _BUDGET_KEYS if record.identity.get(k) is not None), None)


def _untuned_identity(record: Record) -> dict[str, Any]:
    """The run's identity without what the search drew and, under a budget, without the epochs it
    buys each method (FineFACE: fewer): what the trials of one (method, budget) share."""
    budgeted = _budget(record) is not None
    return {k: v for k, v in record.identity.items()
            if not (k == "hparams" or k.startswith("hparams.") or k in _SEARCHED_TRAIN
                    or (budgeted and k == "train.epochs"))}


def _protocol_key(record: Record) -> str:
    """What runs compared in one table group share: everything but seed, method, search draws
    and budget; a method run at several budgets (ERM at 5x, the baseline control) gives one row
    per budget."""
    ident = {k: v for k, v in _untuned_identity(record).items()
             if k not in ("train.seed", "method", "selection", *_BUDGET_KEYS)}
    return json.dumps(ident, sort_keys=True, default=str)


def _budget_label(budget: Budget) -> str:
    if budget is None:
        return ""
    key, amount = budget
    return f"budget {format_flops(amount)}" if key == "train.budget_flops" else f"budget {amount:g} steps"


_FLOORS: dict[tuple[Path, int], float] = {}


def _floor(record: Record) -> float:
    """The DoB noise floor of a run's test split, computed once per run (and version of its
    predictions) however many rules' tables pick it."""
    key = (record.path, (record.path / "predictions_test.csv").stat().st_mtime_ns)
    if key not in _FLOORS:
        frame = record.predictions("test")
        # the stored group column: the groups report_for computed the run's DoB over
        _FLOORS[key] = noise_floors(frame["target"].to_numpy(), frame["pred"].to_numpy(), frame["group"].to_numpy(),
                                    ("dob",),
                                    simulations=200, seed=record.seed)["dob"].upper
    return _FLOORS[key]


Variant = tuple[str, str, Budget]  # (protocol key, method, budget)


def chosen_trials(done: list[Record], rule_name: str) -> dict[Variant, dict[int, tuple[Record, int]]]:
    """{(protocol key, method, budget): {seed: (the trial this rule keeps, trials seen)}}."""
    rule = get_rule(rule_name)
    by: dict[Variant, dict[int, list[Record]]] = {}
    for r in done:
        by.setdefault((_protocol_key(r), r.method, _budget(r)), {}).setdefault(r.seed, []).append(r)
    out = {}
    for key, seeds in by.items():
        out[key] = {}
        for seed, trials in seeds.items():
            scored = sorted(trials, key=lambda r: (rule.score(r.metrics()[rule.split], 0), r.run_id), reverse=True)
            out[key][seed] = (scored[0], len(trials))
    return out


def baseline_variant(variants: list[Variant], pkey: str) -> Variant | None:
    """The ERM a group's rows are paired with: the one given the most compute (a method is
    compared with the strongest ERM the suite trained, never with an under-trained one)."""
    erms = [v for v in variants if v[0] == pkey and v[1] == BASELINE]
    return max(erms, key=lambda v: (v[2] is not None, v[2][1] if v[2] else 0.0), default=None)


def chosen_records(done: list[Record], rule_name: str) -> list[Record]:
    """The trial each (method, seed) keeps under the rule, as records whose identity no longer
    holds what the search drew: the seeds of one method then form one setting (one row, one
    point of a Pareto plot) whatever trial each kept."""
    out = []
    for seeds in chosen_trials(done, rule_name).values():
        for rec, _ in seeds.values():
            out.append(dataclasses.replace(rec, identity=_untuned_identity(rec)))
    return out


def _interval(values: list[float], bounds: tuple[float, float] | None) -> str:
    mean, low, high, n = clipped_t_interval(values, bounds)
    if n == 0:
        return "n/a"
    if math.isnan(low):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def protocol_rows(done: list[Record], rule_name: str) -> list[dict[str, Any]]:
    chosen = chosen_trials(done, rule_name)
    baselines = {pkey: baseline_variant(list(chosen), pkey) for pkey, _, _ in chosen}
    several = {(pkey, method) for pkey, method, _ in chosen
               if sum(1 for p, m, _ in chosen if (p, m) == (pkey, method)) > 1}

    def order(variant: Variant) -> tuple:
        pkey, method, budget = variant
        return (pkey, variant != baselines[pkey], method != BASELINE, method, budget[1] if budget else 0.0)

    rows = []
    for variant in sorted(chosen, key=order):
        pkey, method, budget = variant
        seeds = chosen[variant]
        picked = {s: rec for s, (rec, _) in seeds.items()}
        tests = {s: rec.metrics()["test"] for s, rec in picked.items()}
        acc = [t["accuracy"] for t in tests.values()]
        worst = [t["worst_group_accuracy"] for t in tests.values()]
        dob = [t["dob"] for t in tests.values()]
        floors = [_floor(rec) for rec in picked.values()]
        dob_mean = sum(dob) / len(dob)
        floor_mean = sum(floors) / len(floors)
        baseline = baselines[pkey]
        delta = "(baseline)" if variant == baseline else "no ERM row"
        if baseline is not None and variant != baseline:
            base = {s: rec.metrics()["test"]["worst_group_accuracy"] for s, (rec, _) in chosen[baseline].items()}
            delta = paired_difference({s: t["worst_group_accuracy"] for s, t in tests.items()}, base).describe()
        costs = [rec.cost() or {} for rec in picked.values()]
        flops = [c["train_flops"] for c in costs if c.get("train_flops") is not None]
        steps = [c["optimizer_steps"] for c in costs if c.get("optimizer_steps") is not None]
        first = next(iter(picked.values()))
        label = f"{method} ({_budget_label(budget)})" if (pkey, method) in several else method
        rows.append({
            "dataset": first.dataset, "task": first.task, "method": label,
            "needs": method_needs(method, rule_name), "seeds": len(picked),
            "trials": max(n for _, n in seeds.values()),
            "accuracy": _interval(acc, (0.0, 100.0)), "worst_group_accuracy": _interval(worst, (0.0, 100.0)),
            "worst_vs_erm": delta,
            "dob": _interval(dob, (0.0, 100.0)) + (" ~" if dob_mean <= floor_mean else ""),
            "dob_floor": f"{floor_mean:.2f}",
            "train_flops": format_flops(sum(flops) / len(flops)) if len(flops) == len(costs) else "n/a",
            "optimizer_steps": f"{sum(steps) / len(steps):.0f}" if len(steps) == len(costs) else "n/a",
            "at_chance": at_chance(tests.values()) is not None,
            "budget": _budget_label(budget), "baseline": variant == baseline,
        })
    return rows


TITLES = {"dataset": "Dataset", "task": "Task", "method": "Method", "needs": "Needs", "seeds": "Seeds",
          "trials": "Trials", "accuracy": "Acc % [95% CI]", "worst_group_accuracy": "Worst grp % [95% CI]",
          "worst_vs_erm": "Worst grp - ERM (paired)", "dob": "DoB pp [95% CI]", "dob_floor": "DoB floor",
          "train_flops": "Train FLOPs", "optimizer_steps": "Steps"}


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = ["Each (method, seed) keeps the search trial the rule scores best; means over seeds of that trial's "
             "test metrics; intervals are t-intervals over seeds, clipped to 0-100.",
             "Worst grp - ERM: paired with the (baseline) row, the ERM given the most compute, over the seeds both "
             "have (same seed = same data order and initialisation); a difference is a finding only when its "
             "interval excludes 0.",
             "DoB floor: the 95th percentile of the DoB a perfectly fair classifier shows on this test split at the "
             "row's pooled error rates (200 simulations); '~' marks a mean DoB within it (no measurable bias)."]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        here = [r for r in rows if r["dataset"] == dataset]
        guessing = [r["method"] for r in here if r["at_chance"] and r["method"] != "constant"]
        if guessing:
            notes.append(f"{dataset}: {', '.join(guessing)} at chance on every seed (accuracy within "
                         f"{CHANCE_MARGIN_PP:g} pp of a random guess): no skill on this test split, whatever their gaps.")
        if any(r["baseline"] and r["at_chance"] for r in here):
            notes.append(f"{dataset}: ERM is at chance, so a difference to it says that a method learned the task "
                         "within the budget, not that it removes a bias a trained ERM keeps.")
    if any(r["seeds"] < MIN_SEEDS_FOR_INTERVALS for r in rows):
        notes.append(f"Rows with fewer than {MIN_SEEDS_FOR_INTERVALS} seeds: their intervals are rough.")
    return notes


@register_layout("protocol")
class Protocol(Layout):
    summary = ("one table per selection rule (val accuracy, val worst-group +V, test oracle = upper bound): "
               "chosen trials, paired differences to ERM, DoB noise floor, cost")

    def text(self, done: list[Record], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
        from tabulate import tabulate

        tables = [(rule, protocol_rows(done, rule)) for rule in RULES]
        if fmt == "json":
            return json.dumps([{"rule": rule, "title": get_rule(rule).title, "rows": rows, "notes": _notes(rows)}
                               for rule, rows in tables], indent=2) + "\n"
        if fmt == "csv":
            frame = pd.DataFrame([{"rule": rule, **row} for rule, rows in tables for row in rows])
            return frame.to_csv(index=False)
        tablefmt = {"table": "simple", "markdown": "pipe", "latex": "latex"}[fmt]
        parts = []
        for rule, rows in tables:
            title = f"Protocol, {get_rule(rule).title}"
            parts.append(f"## {title}" if fmt == "markdown" else title)
            if not rows:
                parts.append("(no finished runs)")
                continue
            parts.append(tabulate([[row[k] for k in TITLES] for row in rows], headers=list(TITLES.values()),
                                  tablefmt=tablefmt))
            parts.extend(f"- {n}" if fmt == "markdown" else f"note: {n}" for n in _notes(rows))
            parts.append("")
        if skipped:
            parts.append(f"skipped {len(skipped)} run(s): " + "; ".join(f"{r}: {why}" for r, why in skipped[:5]))
        return "\n".join(parts).rstrip() + "\n"
