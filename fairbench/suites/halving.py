"""Successive halving over a suite's search trials: ``[search] strategy = "halving"``.

Instead of training every trial for its whole budget (random search), every trial of a job trains
a first share of its epochs, the best ``1/eta`` on validation (never test) go on to ``eta`` times
that share, and so on until the survivors have trained in full (Jamieson & Talwalkar 2016; Li et
al. 2018, the synchronous form of ASHA). A trial is the very run random search would train, paused
and resumed exactly between rungs (``train.stop_after_share``), so nothing is retrained; the rungs
are replayed from the runs' histories and listed in ``halving.json``.
How a rung works: docs/fair-comparison.md#successive-halving-rung-by-rung
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairbench.config import ConfigError
from fairbench.selection_rules import check_ranking_rule

if TYPE_CHECKING:
    from fairbench.suites.launchers.base import LaunchContext, Launcher
    from fairbench.suites.suite import Job, SearchSpec


def rung_shares(eta: int, min_budget: float | None) -> list[float]:
    """The share of each trial's epochs at every rung, the last one 1 (the whole budget)."""
    share = min_budget if min_budget is not None else eta ** -2.0
    shares = []
    while share < 1 - 1e-9:
        shares.append(share)
        share *= eta
    return shares + [1.0]


def epochs_at(share: float, epochs: int) -> int:
    """The epochs a rung trains (the runner's rounding of ``train.stop_after_share``)."""
    return epochs if share >= 1 else max(1, math.ceil(share * epochs - 1e-9))


def rung_score(run_dir: Path, rule_name: str, share: float) -> float | None:
    """The trial's best validation score under the rule over the rung's epochs; None when its
    history does not reach them yet (running elsewhere), -inf when it failed or has no epoch."""
    from fairbench.runs.record import RunRecord
    from fairbench.runs.store import read_json
    from fairbench.selection_rules import get_rule

    record = RunRecord(run_dir)
    try:
        epochs = int(record.config["train"]["epochs"])
        history = read_json(run_dir / "history.json")
    except (OSError, ValueError, KeyError, TypeError):
        return float("-inf") if record.status.get("state") == "failed" else None
    upto = epochs_at(share, epochs)
    seen = [h for h in history if h["epoch"] < upto]
    if len(seen) < upto:
        return float("-inf") if record.status.get("state") == "failed" else None
    rule = get_rule(rule_name)
    scores = [rule.score(h["val"], h["epoch"]) for h in seen if h.get("selectable", True)]
    return max(scores, default=float("-inf"))


def launch_halving(launcher: "Launcher", todo: list["Job"], all_jobs: list["Job"], ctx: "LaunchContext",
                   search: "SearchSpec") -> None:
    """Train ``todo`` rung by rung through ``launcher``; jobs outside ``todo`` (done, running
    elsewhere) are scored from their records. Writes ``halving.json`` beside the suite's report."""
    shares = rung_shares(search.eta, search.min_budget)
    families: dict[str, list[Job]] = {}
    for job in all_jobs:
        if job.error is None:
            families.setdefault(job.family, []).append(job)
    rules = {}
    for key, jobs in families.items():
        rules[key] = search.rule or jobs[0].config.selection
        try:
            check_ranking_rule(rules[key])
        except ValueError as exc:
            raise ConfigError(f"{ctx.suite.path}: [search] strategy = \"halving\": the jobs of "
                              f"{jobs[0].describe()}: {exc}") from None
    runnable = {job.index for job in todo}
    alive = dict(families)
    decisions: list[dict[str, Any]] = []
    for share in shares:
        last = share >= 1
        rung = [dataclasses.replace(job, config=_stopping(job, None if last or len(alive[key]) == 1 else share))
                for key, jobs in alive.items() for job in jobs if job.index in runnable]
        if rung:
            launcher.launch(rung, ctx)
        if ctx.result.submitted:  # a batch scheduler has them: a later `suite run` ranks this rung
            break
        entry: dict[str, Any] = {"share": share, "trials": [], "kept": []}
        waiting = []
        for key, jobs in alive.items():
            scored = [(float("-inf") if job.index in ctx.result.failed else
                       rung_score(ctx.runs_dir / job.run_id, rules[key], share), job) for job in jobs]
            waiting += [job for score, job in scored if score is None]
            ranked = sorted(scored, key=lambda sj: (-(sj[0] if sj[0] is not None else float("-inf")), sj[1].trial))
            keep = ranked[:max(1, len(jobs) // search.eta)] if not last else ranked
            entry["trials"] += [{"run_id": job.run_id, "method": job.method, "seed": job.seed, "trial": job.trial,
                                 "rule": rules[key], "score": score} for score, job in scored]
            entry["kept"] += [job.run_id for _, job in keep]
            alive[key] = [job for _, job in keep]
        decisions.append(entry)
        if waiting:  # trained by another process right now: this rung is decided when it has finished
            ctx.progress.log(f"halving: {len(waiting)} trial(s) of rung {len(decisions)} are not at its epochs yet "
                             f"(e.g. {waiting[0].run_id}, trained elsewhere); run the suite again to go on")
            break
        if not last:
            ctx.progress.log(f"halving: rung {len(decisions)} ({share:.3g} of the epochs) keeps "
                             f"{len(entry['kept'])} of {len(entry['trials'])} trials")
    _write_decisions(ctx, search, shares, decisions)


def _stopping(job: "Job", share: float | None):
    config = job.config.model_copy(deep=True)
    config.train.stop_after_share = share
    return config


def _write_decisions(ctx: "LaunchContext", search: "SearchSpec", shares: list[float],
                     decisions: list[dict[str, Any]]) -> None:
    from fairbench.runs.store import atomic_write_json

    out = {"strategy": "halving", "eta": search.eta, "shares": shares,
           "how": "each rung ranks every job's trials by their best validation score (history.json) over the rung's "
                  "epochs; kept trials resume from their checkpoints",
           "rungs": decisions}
    atomic_write_json(ctx.report_dir / "halving.json", json.loads(json.dumps(out, default=str)))
