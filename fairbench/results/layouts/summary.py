"""The ``summary`` layout: one row per (method, setting, training task, evaluated dataset), the
headline metrics (and every metric a plugin declares) as mean ± 95% t-interval half-width over
seeds. Its CSV and JSON are the rows themselves (one object per row), not the long format of
the paper's layouts.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import pandas as pd

from fairbench.metrics.specs import get_spec, view_metrics
from fairbench.registry import register_layout
from fairbench.results.grouping import short_label
from fairbench.results.layouts.base import Layout, LayoutOptions
from fairbench.results.published import method_needs
from fairbench.runs.record import RunRecord
from fairbench.runs.store import clean_nan

#: the headline metrics, in order; every metric whose spec asks to be shown in "summary" follows
HEADLINE = ("accuracy", "worst_group_accuracy", "max_min_ratio", "dob", "deo", "deodds")


def headline(present: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """The summary's metric columns as (report key, column title); with ``present`` (the keys of the
    rows at hand), a metric beyond the headline only where the rows hold it (runs scored before it
    was declared do not)."""
    keys = view_metrics("summary", HEADLINE)
    if present is not None:
        held = set(present)
        keys = [k for k in keys if k in HEADLINE or k in held]
    return [(name, get_spec(name).title_in("summary")) for name in keys]


def number_text(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def summary_frame(done: list[RunRecord]) -> pd.DataFrame:
    """One row per finished run and evaluated dataset (its own test split, then each cross-dataset
    evaluation): the headline metrics of the ``summary`` layout."""
    rows, columns, held = [], headline(), set()
    for record in sorted(done, key=lambda r: r.run_id):
        row = {"run_id": record.run_id, "method": record.method, "needs": method_needs(record.method, record.selection),
               "dataset": record.dataset, "task": record.task, "selection": record.selection,
               "setting": record.setting_key, "seed": record.seed, "eval": record.dataset, "data": record.data_fingerprint}
        for i, ev in enumerate(record.evaluations()):
            values = {key: ev.report.get(key) for key, _ in columns}
            held.update(key for key in values if key in ev.report)
            if i == 0:  # the run's own test split
                row.update(values)
                row["precision"] = record.precision
                rows.append(row)
            else:  # cross-dataset evaluations appear as their own rows, with the data they evaluated
                rows.append({**row, "eval": ev.dataset, "data": ev.fingerprint, **values})
    unheld = [key for key, _ in columns if key not in HEADLINE and key not in held]  # declared after these runs
    return pd.DataFrame(rows).drop(columns=unheld, errors="ignore")


def compare_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval half-width over seeds per (method, dataset, task, setting, eval)."""
    from fairbench.metrics import mean_t_interval

    if runs.empty:
        return runs
    keys = ["method", "needs", "dataset", "task", "selection", "setting", "eval", "data"]
    if "precision" in runs:  # a row per precision; the column is shown only when a run used bf16
        keys.append("precision")
    out = []
    for key, grp in runs.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, key))
        row["seeds"] = len(grp)
        for metric, _ in headline(runs.columns):
            mean, half, _n = mean_t_interval(grp[metric].astype(float).to_numpy())
            row[metric] = mean
            row[f"{metric}_ci95"] = half
        out.append(row)
    table = pd.DataFrame(out)
    # the baseline first in each comparison (as in the paper's tables), then the methods by name
    order = table.assign(_not_baseline=table["method"] != "erm").sort_values(
        ["dataset", "task", "eval", "_not_baseline", "method", "setting"], na_position="first", kind="stable")
    order = order.drop(columns="_not_baseline").reset_index(drop=True)
    if "precision" in order and not (order["precision"] == "bf16").any():
        order = order.drop(columns="precision")
    return order


def setting_labels(done: list[RunRecord]) -> dict[str, str]:
    """Each setting key's label: the keys that tell it apart from the other settings of its method,
    dataset and task, e.g. ``epochs=60`` or ``budget_flops=1.15e+13`` (train. and hparams. left out);
    "—" for a method's only setting."""
    groups: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for record in done:
        ident = {k: v for k, v in record.identity.items() if k != "train.seed"}
        groups.setdefault((record.method, record.dataset, record.task), {})[record.setting_key] = ident
    labels = {}
    for settings in groups.values():
        values = lambda k: {json.dumps(i.get(k), sort_keys=True, default=str) for i in settings.values()}  # noqa: E731
        keys = sorted(k for k in {k for i in settings.values() for k in i} if len(values(k)) > 1)
        for key, ident in settings.items():
            named = ", ".join(f"{k.removeprefix('train.').removeprefix('hparams.')}={short_label(ident[k])}"
                              for k in keys if ident.get(k) is not None)  # a key it does not set: nothing to name
            labels[key] = named or "—"
    return labels


def format_compare(table: pd.DataFrame, fmt: str, labels: dict[str, str] | None = None) -> str:
    """The table in ``fmt``; csv and json are its rows (``setting``: the key), the others name
    what differs between the settings of one method (``labels``, from :func:`setting_labels`)."""
    if fmt == "json":
        return json.dumps(clean_nan(table.to_dict(orient="records")), indent=2)
    if fmt == "csv":
        return table.to_csv(index=False)
    display = pd.DataFrame({
        "method": table["method"], "needs": table["needs"], "trained on": table["dataset"],
        "evaluated on": table["eval"], "task": table["task"], "selection": table["selection"],
        "seeds": table["seeds"],
    })
    if table["setting"].nunique() > table[["method", "dataset", "task"]].drop_duplicates().shape[0]:
        display["setting"] = [(labels or {}).get(key, key) for key in table["setting"]]
    # runs on different copies of a dataset are different settings: say which data each row used
    same = ["method", "dataset", "task", "selection", "eval"]
    if "data" in table and (table.groupby(same, dropna=False)["data"].nunique(dropna=False) > 1).any():
        display["data"] = table["data"].fillna("(not recorded)")
    if "precision" in table:  # some run trained under bf16 autocast
        display["precision"] = table["precision"].fillna("(not recorded)")
    for metric, title in headline(table.columns):
        digits = get_spec(metric).digits
        display[title] = [
            "n/a: undefined in every seed" if m is None or (isinstance(m, float) and math.isnan(m)) else
            number_text(m, digits) + ("" if h is None or (isinstance(h, float) and math.isnan(h)) else f" ± {number_text(h, digits)}")
            for m, h in zip(table[metric], table[f"{metric}_ci95"])
        ]
    if fmt == "latex":
        return display.to_latex(index=False, escape=True)
    from tabulate import tabulate

    return tabulate(display, headers="keys", tablefmt="github" if fmt == "markdown" else "simple", showindex=False)


@register_layout("summary")
class Summary(Layout):
    summary = "one row per method, setting and evaluated dataset: headline metrics over seeds"

    def text(self, done: list[RunRecord], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
        return format_compare(compare_table(summary_frame(done)), fmt, setting_labels(done))
