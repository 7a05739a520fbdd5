"""Benchmark suites: a grid of runs described in one TOML file, run, resumed and reported.

A suite's jobs are seeds x the cartesian product of its ``[grid]`` axes (plus per-method keys,
sweeps, search trials and cross-dataset evaluations); each job's id is the run id ``fairbench run``
would give its resolved configuration, so the runs are ordinary run folders. Which records belong
to a suite (:meth:`Suite.members`) is decided from the stored configurations alone.
Schema and details: docs/fair-comparison.md#the-suite-file-fairbenchsuitessuitepy
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fairbench.config import (
    LOCATION_OPTION_SUFFIXES,
    NOT_HASHED,
    ConfigError,
    RunConfig,
    build_config,
    explain_validation_error,
    read_toml,
)
from fairbench.runs.catalog import flatten
from fairbench.runs.record import RunRecord

#: keys that say where or how fast, never what: ignored when matching records to jobs (as in run ids)
_NOT_MATCHED = {".".join(k) for k in NOT_HASHED}


def _locates(key: str) -> bool:
    return key in _NOT_MATCHED or (key.startswith("data.options.") and key.endswith(LOCATION_OPTION_SUFFIXES))


# -- the schema -------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuiteHeader(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seeds: list[int] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v


class EvaluationSpec(_Strict):
    dataset: str
    #: train, val, test, or all (every image of the dataset: fairbench.evaluation.cross_eval.EVAL_SPLITS)
    split: str = "test"
    options: dict[str, Any] = {}
    #: only the jobs of these methods (default: every job)
    methods: list[str] | None = None

    @field_validator("split")
    @classmethod
    def _known_split(cls, v: str) -> str:
        from fairbench.evaluation.cross_eval import EVAL_SPLITS

        if v not in EVAL_SPLITS:
            raise ValueError(f"unknown split {v!r}; valid: {', '.join(EVAL_SPLITS)}")
        return v

    @property
    def folder(self) -> str:
        """The run store's folder name for this evaluation: ``evaluations/<dataset>-<split>``."""
        return f"{self.dataset}-{self.split}"


class ParetoSpec(_Strict):
    x: str
    y: str
    by: str | None = None
    #: a selection rule (``fairbench list selection``): one point per method, each seed's trial
    #: chosen by it, as in the protocol tables; without it every setting (each trial) is a point
    rule: str | None = None

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, v: str | None) -> str | None:
        if v is not None:
            from fairbench.selection_rules import get_rule

            try:
                get_rule(v)
            except LookupError as exc:  # names the registered rules
                raise ValueError(str(exc)) from None
        return v


class ReportSpec(_Strict):
    layouts: list[str] = ["summary"]
    pareto: list[ParetoSpec] = []

    @field_validator("layouts")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from fairbench.results.layouts.base import layout_names

        bad = [x for x in v if x not in layout_names()]
        if bad:
            raise ValueError(f"unknown layout(s) {bad}; valid: {', '.join(layout_names())}")
        return v


class SearchSpec(_Strict):
    trials: int = Field(ge=1)
    seed: int = 0
    methods: list[str] | None = None
    #: jobs that run the defaults only (trial 0): each entry a table of resolved keys that must all
    #: match, e.g. {method = "fineface", "train.budget_flops" = 1.2e14}: an extra, costly row
    untuned: list[dict[str, Any]] = []
    #: the shared training space to draw from (fairbench.search_spaces.TRAIN_SPACES; default: the
    #: dataset's profile): "cpu-small" for a real dataset trained from scratch like the built-in one
    profile: str | None = None
    #: "random": every trial trains its whole budget; "halving": successive halving (fairbench.suites.halving)
    strategy: Literal["random", "halving"] = "random"
    #: halving: each rung keeps the best 1/eta of the trials (of one job: method, seed, grid point)
    eta: int = Field(default=3, ge=2)
    #: halving: the first rung's share of each trial's epochs (default 1/eta^2: three rungs)
    min_budget: float | None = Field(default=None, gt=0, lt=1)
    #: halving: the validation rule that ranks trials at a rung (default: the jobs' own selection rule)
    rule: str | None = None

    @field_validator("rule")
    @classmethod
    def _validation_rule(cls, v: str | None) -> str | None:
        if v is not None:
            from fairbench.selection_rules import check_ranking_rule

            check_ranking_rule(v)
        return v


class SuiteFile(_Strict):
    suite: SuiteHeader
    base: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    per_method: dict[str, dict[str, Any]] = {}
    evaluate: list[EvaluationSpec] = []
    search: SearchSpec | None = None
    report: ReportSpec = ReportSpec()
    #: ``default = "slurm"`` and one table of options per launcher (``[launcher.slurm]``), checked
    #: by that launcher when it is used (fairbench.launchers)
    launcher: dict[str, Any] = {}


# -- flat dotted keys -----------------------------------------------------------------------------

def _same(a: Any, b: Any) -> bool:
    """Equality of configuration values as stored in JSON (tuples = lists, 1 = 1.0)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


# -- jobs -----------------------------------------------------------------------------------------

@dataclass
class Job:
    index: int  # 1-based position in the suite
    spec: dict[str, Any]  # the declared keys (dotted), including method and train.seed
    evaluations: list[EvaluationSpec]
    config: RunConfig | None = None  # resolved
    trial: int = 0  # search trial (0: the defaults)
    run_id: str | None = None
    error: str | None = None  # the configuration does not resolve (unknown method, bad key ...)
    family: str = ""  # the trials of one job (seed and grid point) share it: a halving search ranks within it
    #: its data could not be fingerprinted here (not found): the run id lacks the fingerprint a run has
    data_error: str | None = None

    @property
    def method(self) -> str:
        return self.spec.get("method", "erm")

    @property
    def seed(self) -> int:
        return self.spec["train.seed"]

    def describe(self) -> str:
        keys = [f"{k}={short(v)}" for k, v in self.spec.items() if k not in ("method", "train.seed")]
        trial = f" trial {self.trial}" if self.trial else ""
        return f"{self.method} seed {self.seed}{trial}" + (f" ({', '.join(keys)})" if keys else "")

    def matches(self, config: dict[str, Any]) -> bool:
        """Whether a stored configuration equals this job on every declared key."""
        flat = flatten({k: v for k, v in config.items() if k != "run_id"})
        return all(_same(flat[key] if key in flat else _stored(config, key), value)
                   for key, value in self.spec.items() if not _locates(key))


def _stored(config: dict[str, Any], key: str) -> Any:
    """The stored value at a dotted key that is not a leaf there (a declared ``options = {}``);
    a sentinel that equals nothing when the key is absent."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return object()
        node = node[part]
    return node


def short(value: Any) -> str:
    """A configuration value for one line of a listing."""
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Suite:
    path: Path
    name: str
    description: str
    seeds: list[int]
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    per_method: dict[str, tuple[dict[str, Any], dict[str, list[Any]]]]  # method -> (keys, sweep axes)
    evaluations: list[EvaluationSpec]
    report: ReportSpec
    launcher: dict[str, Any] = field(default_factory=dict)
    search: SearchSpec | None = None
    _jobs: list[Job] | None = field(default=None, repr=False)
    _by_method_seed: dict[tuple[str, int], list[Job]] | None = field(default=None, repr=False)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str) -> "Suite":
        path = Path(path)
        tree = read_toml(path, "suite file")
        try:
            parsed = SuiteFile.model_validate(tree)
        except ValidationError as exc:
            raise explain_validation_error(exc, SuiteFile, f"suite {path}") from None
        base = flatten(parsed.base)
        axes = _axes(parsed.grid, f"{path}: [grid]")
        per_method = {}
        for method, table in parsed.per_method.items():
            table = dict(table)
            sweep = _axes(table.pop("sweep", {}), f"{path}: [per_method.{method}.sweep]")
            per_method[method] = (flatten(table), sweep)
        for where, keys in [("[base]", base), ("[grid]", axes)] + [
                (f"[per_method.{m}]", {**k, **s}) for m, (k, s) in per_method.items()]:
            if "train.seed" in keys:
                raise ConfigError(f"{path}: {where} sets train.seed; seeds come from [suite] seeds only")
            if "method" in keys and where.startswith("[per_method"):
                raise ConfigError(f"{path}: {where} cannot change the method")
        methods = set(axes.get("method", [base.get("method", "erm")]))
        unused = sorted(set(per_method) - methods)
        if unused:
            raise ConfigError(f"{path}: [per_method.{unused[0]}] names a method no job uses; "
                              f"the suite's methods: {', '.join(sorted(methods))}")
        for spec in parsed.report.pareto:
            _check_metric(spec.x, path)
            _check_metric(spec.y, path)
        return cls(path, parsed.suite.name, parsed.suite.description, parsed.suite.seeds, base, axes,
                   per_method, parsed.evaluate, parsed.report, parsed.launcher, parsed.search)

    # -- expansion -----------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """Every job, seed-major, duplicates (equal declared keys) dropped. Not resolved."""
        if self._jobs is not None:
            return self._jobs
        jobs: list[Job] = []
        # jobs of another (method, seed) never have equal keys: compare only within (method, seed)
        seen: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for seed in self.seeds:
            for spec in _product(self.base, self.axes):
                method = spec.get("method", "erm")
                keys, sweep = self.per_method.get(method, ({}, {}))
                for swept in _product({**spec, **keys}, sweep):
                    for trial, full in self._trials(swept):
                        full["train.seed"] = seed
                        same_group = seen.setdefault((method, seed), [])
                        if any(_same(full, s) for s in same_group):
                            continue
                        same_group.append(full)
                        evals = [e for e in self.evaluations if e.methods is None or method in e.methods]
                        family = json.dumps([seed, swept], sort_keys=True, default=str)
                        jobs.append(Job(len(jobs) + 1, full, evals, trial=trial, family=family))
        if self.search is not None and self.search.strategy == "halving" and any(
                int(job.spec.get("train.validate_every", 1)) > 1 for job in jobs):
            # a rung ranks trials by validation up to its epoch, which may fall between validations
            raise ConfigError(f"{self.path}: [search] strategy = \"halving\" ranks trials on every epoch's "
                              "validation; remove train.validate_every (or set it to 1), or use strategy = \"random\"")
        self._jobs = jobs
        return jobs

    def _trials(self, spec: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        """(trial, declared keys) of every search trial of one job (just the job without [search]).
        A trial's drawn keys override the file's for trials > 0."""
        method = spec.get("method", "erm")
        search = self.search
        if search is None or (search.methods is not None and method not in search.methods):
            return [(0, dict(spec))]
        if any(all(spec.get(k, None if k != "method" else "erm") == v for k, v in entry.items())
               for entry in search.untuned):
            return [(0, dict(spec))]
        from fairbench import registry
        from fairbench.suites.search import SearchSpaceError, sample_trial

        try:
            hparams_model = registry.methods.get(method).Hparams
            profile = search.profile or registry.datasets.get(spec.get("data.name", "synthface")).profile
            drawn = [sample_trial(method, hparams_model, profile, search.seed, t) for t in range(search.trials)]
        except (registry.RegistryError, SearchSpaceError) as exc:
            raise ConfigError(f"{self.path}: [search]: {exc}") from None
        return [(t, {**spec, **{f"{section}.{k}": v for section, keys in d.items() for k, v in keys.items()}})
                for t, d in enumerate(drawn)]

    def resolve(self, data_roots: dict[str, Path] | None = None, device: str | None = None) -> list[Job]:
        """Resolve every job's configuration (imports the methods and datasets it names)."""
        from fairbench.config import resolve, run_id
        from fairbench.data.base import DatasetError
        from fairbench.data.run_fingerprint import data_fingerprint, with_fingerprint

        ids: dict[str, Job] = {}
        fingerprints: dict[str, dict[str, Any]] = {}  # jobs on the same data fingerprint it once
        for job in self.jobs():
            job.config = job.run_id = job.error = job.data_error = None
            try:
                cfg = build_config(None, job.spec)
                root = (data_roots or {}).get(cfg.data.name)
                if root is not None:
                    cfg.data.root = Path(root)
                if device:
                    cfg.train.device = device
                job.config = resolve(cfg)
                # its cross-dataset evaluations follow every rule's epoch, not only the run's own
                job.config.train.keep_rule_checkpoints = bool(job.evaluations)
                # resolved: a generated dataset's options hold the data seed (train.seed unless set)
                data = job.config.data.model_dump(mode="json", include={"name", "root", "options", "cache_dir",
                                                                         "target", "protected"})
                key = json.dumps(data, sort_keys=True, default=str)
                if key not in fingerprints:
                    try:
                        fingerprints[key] = data_fingerprint(job.config)
                    except DatasetError as exc:  # data not here (yet): the job fails with this when it runs
                        fingerprints[key] = {"error": str(exc)}
                if "digest" in fingerprints[key]:
                    job.config = with_fingerprint(job.config, fingerprints[key])  # the data is part of the run id
                else:
                    job.data_error = fingerprints[key]["error"]
                job.run_id = run_id(job.config)
            except ConfigError as exc:
                job.error = str(exc)
                continue
            if job.run_id in ids:
                job.error = f"resolves to the same run as job {ids[job.run_id].index} ({job.run_id})"
                job.config = job.run_id = None
            else:
                ids[job.run_id] = job
        return self.jobs()

    def job_for(self, config: dict[str, Any]) -> Job | None:
        """The job a stored configuration belongs to (declared keys equal), or None. Of several
        matches the one declaring the most keys: search trial 0 declares none of the keys its
        trials draw, so every trial of a job also matches trial 0."""
        if self._by_method_seed is None:  # a suite of thousands of jobs: compare within (method, seed)
            self._by_method_seed = {}
            for job in self.jobs():
                self._by_method_seed.setdefault((job.method, job.seed), []).append(job)
        try:
            candidates = self._by_method_seed.get((config.get("method", "erm"), int(config["train"]["seed"])), [])
        except (KeyError, TypeError, ValueError):  # not a run configuration
            candidates = self.jobs()
        matching = [job for job in candidates if job.matches(config)]
        return max(matching, key=lambda job: len(job.spec)) if matching else None

    def members(self, records: list[RunRecord], problems: list[tuple[str, str]]) -> tuple[list[RunRecord], list[tuple[str, str]]]:
        """The records that belong to this suite, and (run, reason) for those left out: ``problems``
        plus, for a job with several finished records (older code, same declared keys), all but
        the most recent."""
        by_job: dict[int, list[RunRecord]] = {}
        for r in records:
            job = self.job_for(r.config)
            if job is not None:
                by_job.setdefault(job.index, []).append(r)
        kept, extra = [], list(problems)
        for index in sorted(by_job):
            group = by_job[index]
            done = sorted((r for r in group if r.state == "done"), key=lambda r: (r.status.get("ended", ""), r.run_id))
            if done:
                kept.append(done[-1])
                extra += [(r.run_id, f"superseded by {done[-1].run_id} (same suite job)") for r in done[:-1]]
                kept += [r for r in group if r.state != "done"]
            else:
                kept += group
        return kept, extra

    @property
    def report_dir_name(self) -> str:
        return f"suite-{self.name}"


def _axes(tree: dict[str, Any], where: str) -> dict[str, list[Any]]:
    axes = flatten(tree)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {key} must be a non-empty list of alternatives, got {values!r}")
    return axes


def _product(base: dict[str, Any], axes: dict[str, list[Any]]) -> Iterable[dict[str, Any]]:
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)):
        yield {**base, **dict(zip(keys, combo))}


def _check_metric(key: str, path: Path) -> None:
    from fairbench.metrics.specs import metric_specs

    specs = metric_specs()
    if key not in specs:
        raise ConfigError(f"{path}: [report] pareto: unknown metric {key!r}; valid: {', '.join(specs)}")
