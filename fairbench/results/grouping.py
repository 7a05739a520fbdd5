"""Finished runs grouped for comparison: a context (training task, evaluated dataset and split)
holds settings (runs that differ only in seed, and across target attributes in target); and the
per-seed reports a table cell averages (a run's own report, regrouped by another protected
column, or the mean over target attributes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from fairbench.runs.record import Evaluated, RunRecord


@dataclass
class Setting:
    """Runs that differ only in seed (and, across target attributes, in target)."""

    key: str
    method: str
    identity: dict[str, Any]
    selection: str | None
    seeds: dict[int, list[Evaluated]] = field(default_factory=dict)
    label: str = ""

    @property
    def targets(self) -> list[str]:
        return sorted({ev.record.target for evs in self.seeds.values() for ev in evs})


@dataclass
class Context:
    trained_on: str
    target: str | None  # None: several target attributes pooled
    protected: tuple[str, ...]
    evaluated_on: str
    split: str
    settings: list[Setting] = field(default_factory=list)

    def describe(self) -> str:
        task = f"{self.target} ~ {'+'.join(self.protected)}" if self.target else f"~ {'+'.join(self.protected)}"
        return f"trained on {self.trained_on} ({task}), evaluated on {self.evaluated_on} {self.split}"


def contexts(records: Iterable[RunRecord], *, per_target: bool, dataset: str | None = None) -> list[Context]:
    drop = {"train.seed"} | (set() if per_target else {"data.target"})
    found: dict[tuple, Context] = {}
    for rec in sorted(records, key=lambda r: r.run_id):
        ident = {k: v for k, v in rec.identity.items() if k not in drop}
        skey = json.dumps(ident, sort_keys=True, default=str)
        for ev in rec.evaluations():
            if dataset is not None and ev.dataset != dataset:
                continue
            ckey = (rec.dataset, rec.target if per_target else None, rec.protected, ev.dataset, ev.split)
            ctx = found.setdefault(ckey, Context(*ckey))
            setting = next((s for s in ctx.settings if s.key == skey), None)
            if setting is None:
                setting = Setting(skey, rec.method, ident, rec.config.get("selection"))
                ctx.settings.append(setting)
            setting.seeds.setdefault(rec.seed, []).append(ev)
    ordered = sorted(found.values(), key=lambda c: (c.trained_on, c.target or "", c.protected,
                                                    c.evaluated_on != c.trained_on, c.evaluated_on, c.split))
    for ctx in ordered:
        _label_settings(ctx.settings)
    return ordered


def _label_settings(settings: list[Setting]) -> None:
    """The method name, plus the keys that tell apart settings of the same method."""
    for method in {s.method for s in settings}:
        same = [s for s in settings if s.method == method]
        keys = sorted({k for s in same for k in s.identity}
                      - {k for k in same[0].identity if all(s.identity.get(k) == same[0].identity.get(k) for s in same)})
        for s in same:
            extra = ", ".join(f"{k}={short_label(s.identity.get(k))}" for k in keys)
            s.label = f"{method} ({extra})" if extra else method
    settings.sort(key=lambda s: (s.method != "erm", s.label))


def precision_label(setting: Setting) -> str:
    """", bf16" when any seed of the setting trained under bf16 autocast (fp32, the default, and
    unrecorded precisions add nothing)."""
    found = {ev.record.precision for evs in setting.seeds.values() for ev in evs}
    return "" if "bf16" not in found else (", bf16" if found == {"bf16"} else ", bf16 + fp32 seeds")


def short_label(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.4g}"  # a FLOP budget reads 1.15e+13, not 11500000000000.0
    else:
        text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."




def seed_reports(setting: Setting, by: str | None = None) -> dict[int, dict[str, Any]]:
    """One report per seed: the run's own, or with its groups the values of the protected column ``by``."""
    return {seed: (evs[0].report_by(by) if by else evs[0].report) for seed, evs in sorted(setting.seeds.items())}


def attribute_means(setting: Setting) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Per seed, the mean over the setting's target attributes of each metric (a seed that lacks an
    attribute is left out, with a note); each mean keeps its attributes' reports."""
    from fairbench.metrics import mean_over_attributes

    notes: list[str] = []
    out: dict[int, dict[str, Any]] = {}
    targets = setting.targets
    for seed, evs in sorted(setting.seeds.items()):
        have = {ev.record.target for ev in evs}
        if have != set(targets):
            notes.append(f"{setting.label}: seed {seed} lacks {', '.join(sorted(set(targets) - have))}: left out")
            continue
        reports = [ev.report for ev in sorted(evs, key=lambda e: e.record.target)]
        mean = mean_over_attributes(reports)
        mean["undefined"] = [m for r in reports for m in r.get("undefined", [])]
        mean["_per_attribute"] = {ev.record.target: ev.report for ev in evs}
        out[seed] = mean
    return out, notes
