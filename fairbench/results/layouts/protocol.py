"""The ``protocol`` layout: one table per selection rule, the same rule for every row.

For each rule, each (method, seed) keeps a (trial, epoch): every search trial at the epoch the
rule chose within it on validation (:mod:`fairbench.training.rule_checkpoints`), then the trial
the rule scores best (ties: :func:`fairbench.selection_rules.preference`). A row is the mean over seeds
of the kept test metrics, with intervals that include test-sample noise
(:mod:`fairbench.metrics.resampling`), the paired difference to ERM with Holm's correction, the
DoB noise floor (:mod:`fairbench.metrics.noise_floor`) and the training cost. The rules, the
columns and the statistics: docs/fair-comparison.md ("One selection rule per table", "Statistics")
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cost import format_flops
from fairbench.metrics.noise_floor import noise_floors
from fairbench.metrics.resampling import RESAMPLED, TEST_RESAMPLES, TestSample, variance_of_mean
from fairbench.metrics.uncertainty import MIN_SEEDS_FOR_INTERVALS, clipped_t_interval, holm_adjusted, paired_difference
from fairbench.registry import register_layout
from fairbench.results.layouts.base import Layout, LayoutOptions
from fairbench.results.notes import CHANCE_MARGIN_PP, at_chance
from fairbench.results.published import method_needs
from fairbench.runs.record import Evaluated, RunRecord
from fairbench.search_spaces import TRAIN_SPACES
from fairbench.selection_rules import get_rule, preference

RULES = ("accuracy", "worst_group_accuracy", "test_oracle")
BASELINE = "erm"
#: keys a search varies: runs equal on every other key (but the seed) are trials of one another
_SEARCHED_TRAIN = {f"train.{k}" for space in TRAIN_SPACES.values() for k in space} | {"train.backbone_lr"}
_SEARCHED_TRAIN.add("train.eval_batch_size")  # follows the drawn batch size by default


_BUDGET_KEYS = ("train.budget_flops", "train.budget_steps")

#: a run's budget: (key, amount), or None for a run given epochs
Budget = tuple[str, float] | None


def _budget(record: RunRecord) -> Budget:
    return next(((k, float(record.identity[k])) for k in _BUDGET_KEYS if record.identity.get(k) is not None), None)


def _untuned_identity(record: RunRecord) -> dict[str, Any]:
    """The run's identity without what the search drew and, under a budget, without the epochs it
    buys each method (FineFACE: fewer): what the trials of one (method, budget) share."""
    budgeted = _budget(record) is not None
    return {k: v for k, v in record.identity.items()
            if not (k == "hparams" or k.startswith("hparams.") or k in _SEARCHED_TRAIN
                    or (budgeted and k == "train.epochs"))}


def _protocol_key(record: RunRecord) -> str:
    """What runs compared in one table group share: everything but seed, method, search draws
    and budget; a method run at several budgets (ERM at 5x, the baseline control) gives one row
    per budget."""
    ident = {k: v for k, v in _untuned_identity(record).items()
             if k not in ("train.seed", "method", "selection", *_BUDGET_KEYS)}
    return json.dumps(ident, sort_keys=True, default=str)


def budget_label(budget: Budget) -> str:
    if budget is None:
        return ""
    key, amount = budget
    return f"budget {format_flops(amount)}" if key == "train.budget_flops" else f"budget {amount:g} steps"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One checkpoint of a run that a rule can keep: the epoch the rule chose within the run
    (counted from 1) with its validation and test reports and test predictions."""

    record: RunRecord
    epoch: int | None
    val: dict[str, Any]
    test: dict[str, Any]
    predictions: Path
    train_flops: float | None  # spent up to this epoch (ties prefer the cheaper model)
    fallback: bool = False  # recorded before runs followed every rule: the run's own checkpoint

    @property
    def is_own(self) -> bool:
        """The run's own checkpoint (cross-dataset evaluations were made with it)."""
        return self.predictions.name == "predictions_test.csv"


def _own(record: RunRecord, fallback: bool) -> Candidate:
    metrics = record.metrics()
    selection = metrics.get("selection") or {}
    # "selected_epoch" counts from 1; records written before it hold "epoch", from 0
    epoch = selection.get("selected_epoch", None if selection.get("epoch") is None else selection["epoch"] + 1)
    return Candidate(record, epoch, metrics["val"], metrics["test"],
                     record.path / "predictions_test.csv", (record.cost() or {}).get("train_flops"), fallback)


def candidates(record: RunRecord) -> dict[str, Candidate]:
    """{rule: the checkpoint that rule chose within the run} (``metrics.json`` ``rules``,
    :mod:`fairbench.training.rule_checkpoints`); {} for a run recorded before."""
    return {name: Candidate(record, entry["epoch"], entry["val"], entry["test"], record.path / entry["predictions"],
                            entry.get("train_flops"))
            for name, entry in (record.metrics().get("rules") or {}).items()}


def candidate(record: RunRecord, rule_name: str) -> Candidate:
    """The checkpoint of a run a rule keeps: a validation rule's own epoch; for the test oracle,
    the kept checkpoint with the best test score. Without stored rules: the run's own checkpoint,
    marked ``fallback``."""
    rule = get_rule(rule_name)
    stored = candidates(record)
    if rule.is_oracle:
        pool = list(stored.values()) or [_own(record, fallback=True)]
        return min(pool, key=lambda c: preference(rule.score(c.test, c.epoch or 0), c.train_flops, None,
                                                  c.predictions.name))
    return stored.get(rule_name) or _own(record, fallback=True)


def _score(kept: Candidate, rule_name: str) -> float:
    rule = get_rule(rule_name)
    return rule.score(kept.val if rule.split == "val" else kept.test, (kept.epoch or 1) - 1)


_SAMPLES: dict[tuple[Path, int], tuple[TestSample, dict[str, np.ndarray]]] = {}


def _sample(kept: Candidate) -> tuple[TestSample, dict[str, np.ndarray]]:
    """A candidate's test predictions and their bootstrap replicates, read once per file (and
    version of it) however many rules' tables and pairings use them."""
    key = (kept.predictions, kept.predictions.stat().st_mtime_ns)
    if key not in _SAMPLES:
        sample = TestSample.from_frame(pd.read_csv(kept.predictions, keep_default_na=False))
        _SAMPLES[key] = (sample, sample.resampled())
    return _SAMPLES[key]


_FLOORS: dict[tuple[Path, int], float] = {}


def _floor(kept: Candidate) -> float:
    """The DoB noise floor of a candidate's test predictions, computed once per file."""
    key = (kept.predictions, kept.predictions.stat().st_mtime_ns)
    if key not in _FLOORS:
        frame = pd.read_csv(kept.predictions, keep_default_na=False)
        # the stored group column: the groups report_for computed the run's DoB over
        _FLOORS[key] = noise_floors(frame["target"].to_numpy(), frame["pred"].to_numpy(), frame["group"].to_numpy(),
                                    ("dob",), simulations=200, seed=kept.record.seed)["dob"].upper
    return _FLOORS[key]


Variant = tuple[str, str, Budget]  # (protocol key, method, budget)


@dataclasses.dataclass(frozen=True)
class Chosen:
    """What a rule keeps for one (method, seed): a trial at an epoch, out of ``trials`` trials;
    ``close``: the runner-up trial scores within the kept one's standard error."""

    kept: Candidate
    trials: int
    standard_error: float
    close: bool


def chosen_trials(done: list[RunRecord], rule_name: str) -> dict[Variant, dict[int, Chosen]]:
    """{(protocol key, method, budget): {seed: what the rule keeps}}: each trial at the epoch the
    rule chose within it, then the trial it scores best (ties: :func:`fairbench.selection_rules.preference`)."""
    rule = get_rule(rule_name)
    by: dict[Variant, dict[int, list[RunRecord]]] = {}
    for r in done:
        by.setdefault((_protocol_key(r), r.method, _budget(r)), {}).setdefault(r.seed, []).append(r)
    out: dict[Variant, dict[int, Chosen]] = {}
    for key, seeds in by.items():
        out[key] = {}
        for seed, trials in seeds.items():
            kept = sorted((candidate(r, rule_name) for r in trials),
                          key=lambda c: preference(_score(c, rule_name), c.train_flops, c.record.trial, c.record.run_id))
            best = kept[0]
            se = rule.standard_error(best.val if rule.split == "val" else best.test)
            close = len(kept) > 1 and not math.isnan(se) and _score(best, rule_name) - _score(kept[1], rule_name) <= se
            out[key][seed] = Chosen(best, len(trials), se, close)
    return out


def baseline_variant(variants: list[Variant], pkey: str) -> Variant | None:
    """The ERM a group's rows are paired with: the one given the most compute (a method is
    compared with the strongest ERM the suite trained, never with an under-trained one)."""
    erms = [v for v in variants if v[0] == pkey and v[1] == BASELINE]
    return max(erms, key=lambda v: (v[2] is not None, v[2][1] if v[2] else 0.0), default=None)


def as_chosen(kept: Candidate) -> RunRecord:
    """A record that reads as the candidate: its reports, its test predictions, and the
    cross-dataset evaluations made with this checkpoint: the run's own, or, for another epoch,
    those the evaluation made of it (``<evaluation>/epoch<N>/``, runs that kept their rule
    checkpoints); none where there are none."""
    rec = kept.record
    metrics = {**rec.metrics(), "val": kept.val, "test": kept.test}
    out = dataclasses.replace(rec, identity=_untuned_identity(rec), _metrics=metrics, _evaluations=None)
    evaluations = [Evaluated(out, rec.dataset, "test", kept.test, kept.predictions, rec.protected)]
    for ev in rec.evaluations()[1:]:
        if kept.is_own:
            evaluations.append(dataclasses.replace(ev, record=out))
            continue
        at = ev.predictions.parent / f"epoch{kept.epoch}" if ev.predictions is not None else None
        if at is not None and (at / "metrics.json").is_file():
            report = json.loads((at / "metrics.json").read_text())["report"]
            evaluations.append(dataclasses.replace(ev, record=out, report=report, predictions=at / "predictions.csv",
                                                   _by={}))
    out._evaluations = evaluations
    return out


def chosen_records(done: list[RunRecord], rule_name: str) -> list[RunRecord]:
    """The (trial, epoch) each (method, seed) keeps under the rule, as records whose identity no
    longer holds what the search drew: the seeds of one method then form one setting (one row,
    one point of a Pareto plot) whatever trial each kept."""
    return [as_chosen(c.kept) for seeds in chosen_trials(done, rule_name).values() for c in seeds.values()]


#: report key -> the cell of a row: interval columns hold test-sample noise besides the seeds'
INTERVAL_METRICS = RESAMPLED
#: a row beats ERM when its paired difference survives Holm's correction at this level
FAMILY_ALPHA = 0.05
DIFFERENCE_METRIC = "worst_group_accuracy"


def _interval(values: list[float], sample_variance: float, bounds: tuple[float, float] | None) -> str:
    mean, low, high, n = clipped_t_interval(values, bounds, sample_variance=sample_variance)
    if n == 0:
        return "n/a"
    if math.isnan(low):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def _value(kept: Candidate, key: str) -> float:
    """A test metric of the candidate: its report's, else (a report older than the metric)
    computed from its predictions."""
    value = kept.test.get(key)
    if value is None:
        value = _sample(kept)[0].point()[key]
    return float(value)


def _epochs(picked: dict[int, Candidate]) -> str:
    epochs = sorted(c.epoch for c in picked.values() if c.epoch is not None)
    text = "n/a" if not epochs else (f"{epochs[0]}" if epochs[0] == epochs[-1] else f"{epochs[0]}-{epochs[-1]}")
    return text + (" †" if any(c.fallback for c in picked.values()) else "")


def protocol_rows(done: list[RunRecord], rule_name: str) -> list[dict[str, Any]]:
    chosen = chosen_trials(done, rule_name)
    baselines = {pkey: baseline_variant(list(chosen), pkey) for pkey, _, _ in chosen}
    several = {(pkey, method) for pkey, method, _ in chosen
               if sum(1 for p, m, _ in chosen if (p, m) == (pkey, method)) > 1}

    def order(variant: Variant) -> tuple:
        pkey, method, budget = variant
        return (pkey, variant != baselines[pkey], method != BASELINE, method, budget[1] if budget else 0.0)

    rows, differences = [], []
    for variant in sorted(chosen, key=order):
        pkey, method, budget = variant
        seeds = chosen[variant]
        picked = {s: c.kept for s, c in seeds.items()}
        tests = {s: kept.test for s, kept in picked.items()}
        replicates = {s: _sample(kept)[1] for s, kept in picked.items()}
        cells = {}
        for key in INTERVAL_METRICS:
            values = [_value(kept, key) for kept in picked.values()]
            noise = variance_of_mean([replicates[s][key] for s in picked])
            cells[key] = _interval(values, noise, (0.0, 100.0))
        dob_mean = sum(_value(k, "dob") for k in picked.values()) / len(picked)
        floor_mean = sum(_floor(kept) for kept in picked.values()) / len(picked)
        baseline = baselines[pkey]
        delta, difference = ("(baseline)" if variant == baseline else "no ERM row"), None
        if baseline is not None and variant != baseline:
            base = {s: c.kept for s, c in chosen[baseline].items()}
            common = [s for s in picked if s in base]
            # the same seed sees the same test images: their replicates resample the same indices
            noise = variance_of_mean([replicates[s][DIFFERENCE_METRIC] for s in common],
                                     [_sample(base[s])[1][DIFFERENCE_METRIC] for s in common]) if common else 0.0
            difference = paired_difference({s: _value(k, DIFFERENCE_METRIC) for s, k in picked.items()},
                                           {s: _value(k, DIFFERENCE_METRIC) for s, k in base.items()},
                                           sample_variance=noise)
            delta = difference.describe()
        differences.append(difference)
        errors = [c.standard_error for c in seeds.values() if not math.isnan(c.standard_error)]
        close = sum(c.close for c in seeds.values())
        costs = [kept.record.cost() or {} for kept in picked.values()]
        flops = [c["train_flops"] for c in costs if c.get("train_flops") is not None]
        steps = [c["optimizer_steps"] for c in costs if c.get("optimizer_steps") is not None]
        first = next(iter(picked.values())).record
        label = f"{method} ({budget_label(budget)})" if (pkey, method) in several else method
        rows.append({
            "dataset": first.dataset, "task": first.task, "method": label,
            "needs": method_needs(method, rule_name), "seeds": len(picked),
            "trials": max(c.trials for c in seeds.values()), "epoch": _epochs(picked),
            "selection_se": (f"{sum(errors) / len(errors):.2f}" + (f" ({close}/{len(seeds)} close)" if close else "")
                             if errors else "n/a"),
            "accuracy": cells["accuracy"], "worst_group_accuracy": cells["worst_group_accuracy"],
            "worst_cell_accuracy": cells["worst_cell_accuracy"],
            "worst_vs_erm": delta, "beats_erm": "",
            "dob": cells["dob"] + (" ~" if dob_mean <= floor_mean else ""),
            "dob_floor": f"{floor_mean:.2f}",
            "train_flops": format_flops(sum(flops) / len(flops)) if len(flops) == len(costs) else "n/a",
            "optimizer_steps": f"{sum(steps) / len(steps):.0f}" if len(steps) == len(costs) else "n/a",
            "at_chance": at_chance(tests.values()) is not None,
            "fallback": any(k.fallback for k in picked.values()),
            "budget": budget_label(budget), "baseline": variant == baseline,
        })
    # Holm over the rows of this table compared with ERM: a row beats ERM only if it survives it
    adjusted = holm_adjusted([d.p_value if d is not None else math.nan for d in differences])
    for row, d, p in zip(rows, differences, adjusted):
        row["p_vs_erm"] = None if d is None or math.isnan(d.p_value) else d.p_value  # before Holm
        if d is not None and not math.isnan(p):
            row["beats_erm"] = f"{'yes' if p <= FAMILY_ALPHA and d.mean > 0 else 'no'} (p={p:.3f})"
    return rows


TITLES = {"dataset": "Dataset", "task": "Task", "method": "Method", "needs": "Needs", "seeds": "Seeds",
          "trials": "Trials", "epoch": "Epoch", "selection_se": "Sel. SE pp",
          "accuracy": "Acc % [95% CI]", "worst_group_accuracy": "Worst grp % [95% CI]",
          "worst_cell_accuracy": "Worst cell % [95% CI]",
          "worst_vs_erm": "Worst grp - ERM (paired)", "beats_erm": "Beats ERM (Holm)",
          "dob": "DoB pp [95% CI]", "dob_floor": "DoB floor", "train_flops": "Train FLOPs", "optimizer_steps": "Steps"}


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = ["Each (method, seed) keeps the (trial, epoch) the rule scores best: every trial at the epoch the rule "
             "chose within it, then the best trial (ties: the cheaper model, fewer training FLOPs up to its epoch, "
             "then the lower search trial). Epoch: the kept epochs (from 1) over the seeds.",
             f"Intervals: mean over seeds of the kept test metrics; 95 % t-interval (n - 1 degrees of freedom) whose "
             f"variance adds to the seeds' s^2 / n the test-sample variance of the mean ({TEST_RESAMPLES} bootstrap "
             "resamples of the test images, the same images for seeds sharing a test split), clipped to 0-100.",
             "Worst grp: the lowest group accuracy; Worst cell: the lowest accuracy of a (true class, group) cell, "
             "i.e. per-group recall (Sagawa et al.'s worst group).",
             "Worst grp - ERM: paired with the (baseline) row, the ERM given the most compute, over the seeds both "
             "have (same seed = same data order, initialisation and test images; both resampled with the same image "
             "indices); a difference is a finding only when its interval excludes 0.",
             f"Beats ERM (Holm): the paired test's two-sided p-value (t over seeds with the test-sample variance), "
             f"Holm-adjusted over the rows of this table compared with ERM; 'yes' only when the adjusted p <= "
             f"{FAMILY_ALPHA:g} and the row's worst group is higher.",
             "Sel. SE pp: how far the kept trial's score could move by the luck of the evaluated images: the binomial "
             "standard error of the rule's accuracy over the samples it counts (for worst group, that group's), mean "
             "over seeds; 'k/n close': on k seeds the runner-up trial scored within it, so the choice is a coin toss.",
             "DoB floor: the 95th percentile of the DoB a perfectly fair classifier shows on this test split at the "
             "row's pooled error rates (200 simulations); '~' marks a mean DoB within it (no measurable bias)."]
    if any(r.get("fallback") for r in rows):
        notes.append("Epoch '†': runs recorded before runs kept every rule's epoch: their own checkpoint (the run's "
                     "selection rule), whatever this table's rule.")
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

    def text(self, done: list[RunRecord], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
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
