"""Benchmark suites: a grid of runs described in one TOML file, run, resumed and reported.

Schema (every file under ``benchmarks/`` repeats it in a comment at its top)::

    [suite]
    name = "quickstart"            # report folder: <runs-dir>/suite-<name>/
    description = "..."            # optional
    seeds = [0, 1, 2]              # every job runs once per seed (train.seed is set from here only)

    [base]                         # run-configuration keys shared by every job: any key that
    data.name = "synthface"        # `fairbench run --config FILE` accepts (method, data.*,
    train.epochs = 4               # backbone.*, train.*, hparams.*, selection), nested or dotted

    [grid]                         # the axes: each value is the LIST of alternatives;
    method = ["erm", "fineface"]   # jobs = seeds x the cartesian product of the axes
    data.target = ["smiling"]

    [per_method.jtt]               # keys for the jobs of one method only (after [base] and [grid])
    hparams.upweight = 20
    [per_method.fair_mixup.sweep]  # extra axes for one method only (a hyperparameter sweep)
    hparams.lam = [1.0, 10.0]

    [[evaluate]]                   # cross-dataset evaluations, run after training on every
    dataset = "utkface"            # finished job (or only those of `methods = [...]`);
    split = "test"                 # `options` is handed to fairbench.cross_eval unchanged
    options = {}

    [report]                       # what `suite run` writes at the end, next to the runs
    layouts = ["methods", "groups"]            # `fairbench compare --layout` -> table.md
    pareto = [{x = "dob", y = "accuracy"}]     # `fairbench plot pareto` -> pareto.png

A job's id is the run id of its resolved configuration, exactly what ``fairbench run`` would
give it; the runs are ordinary run folders, so ``fairbench run``, ``compare`` and ``plot``
see them too. Jobs are ordered seed-major (every method of seed 0 first), so a suite stopped
half-way already has comparable rows.

Which records belong to a suite (``compare --suite``, ``plot pareto --suite``): those whose
stored configuration equals one of the suite's jobs on every key the suite declares. That
needs neither the training code nor the datasets installed (reports are often made away
from the machine that trained), and it does not depend on defaults that are not in the file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

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

#: keys that say where or how fast, never what: ignored when matching records to jobs (as in run ids)
_NOT_MATCHED = {".".join(k) for k in NOT_HASHED}


def _locates(key: str) -> bool:
    return key in _NOT_MATCHED or (key.startswith("data.options.") and key.endswith(LOCATION_OPTION_SUFFIXES))
LAYOUTS = ("summary", "groups", "methods", "attributes", "min-group")


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
    split: str = "test"
    options: dict[str, Any] = {}
    #: only the jobs of these methods (default: every job)
    methods: list[str] | None = None

    @property
    def folder(self) -> str:
        """The run store's folder name for this evaluation: ``evaluations/<dataset>-<split>``."""
        return f"{self.dataset}-{self.split}"


class ParetoSpec(_Strict):
    x: str
    y: str
    by: str | None = None


class ReportSpec(_Strict):
    layouts: list[str] = ["summary"]
    pareto: list[ParetoSpec] = []

    @field_validator("layouts")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in LAYOUTS]
        if bad:
            raise ValueError(f"unknown layout(s) {bad}; valid: {', '.join(LAYOUTS)}")
        return v


class SuiteFile(_Strict):
    suite: SuiteHeader
    base: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    per_method: dict[str, dict[str, Any]] = {}
    evaluate: list[EvaluationSpec] = []
    report: ReportSpec = ReportSpec()
    #: ``default = "slurm"`` and one table of options per launcher (``[launcher.slurm]``), checked
    #: by that launcher when it is used (fairbench.launchers)
    launcher: dict[str, Any] = {}


# -- flat dotted keys -----------------------------------------------------------------------------

def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"name": "x"}}`` -> ``{"data.name": "x"}``; lists are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


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
    run_id: str | None = None
    error: str | None = None  # the configuration does not resolve (unknown method, bad key ...)

    @property
    def method(self) -> str:
        return self.spec.get("method", "erm")

    @property
    def seed(self) -> int:
        return self.spec["train.seed"]

    def describe(self) -> str:
        keys = [f"{k}={_short(v)}" for k, v in self.spec.items() if k not in ("method", "train.seed")]
        return f"{self.method} seed {self.seed}" + (f" ({', '.join(keys)})" if keys else "")

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


def _short(value: Any) -> str:
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
    _jobs: list[Job] | None = field(default=None, repr=False)

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
                   per_method, parsed.evaluate, parsed.report, parsed.launcher)

    # -- expansion -----------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """Every job, seed-major, duplicates (equal declared keys) dropped. Not resolved."""
        if self._jobs is not None:
            return self._jobs
        jobs: list[Job] = []
        seen: list[dict[str, Any]] = []
        for seed in self.seeds:
            for spec in _product(self.base, self.axes):
                method = spec.get("method", "erm")
                keys, sweep = self.per_method.get(method, ({}, {}))
                for full in _product({**spec, **keys}, sweep):
                    full["train.seed"] = seed
                    if any(_same(full, s) for s in seen):
                        continue
                    seen.append(full)
                    evals = [e for e in self.evaluations if e.methods is None or method in e.methods]
                    jobs.append(Job(len(jobs) + 1, full, evals))
        self._jobs = jobs
        return jobs

    def resolve(self, data_roots: dict[str, Path] | None = None, device: str | None = None) -> list[Job]:
        """Resolve every job's configuration (imports the methods and datasets it names)."""
        from fairbench.config import resolve, run_id

        ids: dict[str, Job] = {}
        for job in self.jobs():
            job.config = job.run_id = job.error = None
            try:
                cfg = build_config(None, job.spec)
                root = (data_roots or {}).get(cfg.data.name)
                if root is not None:
                    cfg.data.root = Path(root)
                if device:
                    cfg.train.device = device
                job.config = resolve(cfg)
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
        """The job a stored configuration belongs to (declared keys equal), or None."""
        return next((job for job in self.jobs() if job.matches(config)), None)

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
    from fairbench.tables import METRICS

    if key not in METRICS:
        raise ConfigError(f"{path}: [report] pareto: unknown metric {key!r}; valid: {', '.join(METRICS)}")


# -- job states -----------------------------------------------------------------------------------

@dataclass
class JobState:
    state: str  # done | running | queued | failed | incomplete | pending | invalid
    detail: str = ""


def job_state(job: Job, runs_dir: Path) -> JobState:
    from fairbench.run_store import RunRecord

    if job.error:
        return JobState("invalid", job.error.splitlines()[0])
    from fairbench.launchers.base import queued

    path = Path(runs_dir) / job.run_id
    submitted = queued(runs_dir, job.run_id)  # a scheduler holds it and it has not started (since)
    if not path.is_dir():
        return JobState("queued", submitted.get("detail", "")) if submitted else JobState("pending")
    status = RunRecord(path).status()
    state = status.get("state", "incomplete")
    if submitted and state in ("failed", "incomplete"):
        return JobState("queued", submitted.get("detail", ""))
    if state == "done":
        missing = [e.folder for e in job.evaluations if not (path / "evaluations" / e.folder / "metrics.json").is_file()]
        return JobState("done", f"evaluations missing: {', '.join(missing)}" if missing else "")
    if state == "running":
        epoch = status.get("epoch")
        where = f"pid {status.get('pid')} on {status.get('host')}"
        return JobState("running", f"epoch {epoch + 1}/{job.config.train.epochs}, {where}" if epoch is not None else where)
    if state == "failed":
        return JobState("failed", (status.get("error") or "").splitlines()[0] if status.get("error") else "")
    return JobState(state, status.get("reason", ""))


# -- progress -------------------------------------------------------------------------------------

class SuiteProgress:
    """One bar for the whole suite and one per running job (rich on a terminal, log lines otherwise)."""

    def __init__(self, total: int, already_done: int, quiet: bool = False, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.total, self.finished = total, already_done
        self.rich = not quiet and self.console.is_terminal
        self._tasks: dict[int, Any] = {}
        self._progress = None
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console)
            self._overall = self._progress.add_task("suite", total=total, completed=already_done, info="")

    def __enter__(self) -> "SuiteProgress":
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.stop()

    def log(self, message: str) -> None:
        if self.rich:
            self._progress.console.print(message, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def begin(self, job: Job) -> None:
        self.log(f"job {job.index}/{self.total} start {job.run_id}: {job.describe()}")
        if self.rich:
            self._tasks[job.index] = self._progress.add_task(f"  {job.method} s{job.seed}", total=job.config.train.epochs,
                                                             info="")
        else:
            self._tasks[job.index] = None

    def epoch(self, job: Job, completed: float, info: str = "") -> None:
        if self.rich and job.index in self._tasks:
            self._progress.update(self._tasks[job.index], completed=completed, info=info)

    def end(self, job: Job, state: str, detail: str = "", seconds: float | None = None) -> None:
        task = self._tasks.pop(job.index, None)
        if self.rich and task is not None:
            self._progress.remove_task(task)
        self.finished += 1
        if self.rich:
            self._progress.update(self._overall, completed=self.finished)
        took = f" in {seconds:.0f}s" if seconds is not None else ""
        self.log(f"job {job.index}/{self.total} {state} {job.run_id}{took}" + (f": {detail}" if detail else "")
                 + f" [{self.finished}/{self.total} finished]")


def _suite_reporter(progress: SuiteProgress, job: Job):
    """A runner Reporter that draws the job's epochs on the suite's progress display."""
    from fairbench.progress import Reporter, _Bars, _epoch_line

    class _JobBars(_Bars):
        def __init__(self, epochs: int, batches: int):
            self.epochs, self.batches, self.current = epochs, max(1, batches), 0

        def start_epoch(self, epoch):
            self.current = epoch

        def advance_batch(self, step, sums):
            progress.epoch(job, self.current + step / self.batches, f"epoch {self.current + 1}/{self.epochs}")

        def end_epoch(self, epoch, train, val, selected):
            progress.epoch(job, epoch + 1, "")
            progress.log("    " + _epoch_line(epoch, self.epochs, train, val, selected))

    class _JobReporter(Reporter):
        def log(self, message):
            progress.log("    " + message)

        @contextlib.contextmanager
        def training(self, epochs, batches_per_epoch, n_val):
            yield _JobBars(epochs, batches_per_epoch)

    return _JobReporter(quiet=True, console=progress.console)


# -- running --------------------------------------------------------------------------------------

@dataclass
class SuiteResult:
    jobs: list[Job]
    before: dict[int, JobState]
    ran: list[int] = field(default_factory=list)  # job indices trained in this invocation
    failed: dict[int, str] = field(default_factory=dict)
    evaluated: list[tuple[int, str]] = field(default_factory=list)
    evaluation_errors: list[tuple[int, str, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    interrupted: bool = False
    busy: dict[int, str] = field(default_factory=dict)  # found running in another process: left to it
    submitted: list[int] = field(default_factory=list)  # handed to a batch scheduler, not finished yet

    def summary(self) -> str:
        skipped = sum(1 for s in self.before.values() if s.state == "done")
        others = sum(1 for s in self.before.values() if s.state in ("running", "invalid"))
        others += len(self.busy)
        text = (f"{len(self.jobs)} jobs: {len(self.ran)} trained now, {skipped} already done, {len(self.failed)} failed"
                + (f", {len(self.submitted)} submitted" if self.submitted else "")
                + (f", {others} left alone (running elsewhere or invalid)" if others else "")
                + (f"; {len(self.evaluated)} evaluations run" if self.evaluated else ""))
        if self.outputs:
            text += f"\nreport: {self.outputs[0].parent}/ ({', '.join(p.name for p in self.outputs)})"
        return text


def run_suite(suite: Suite, runs_dir: Path, *, jobs: int | None = None, dry_run: bool = False,
              data_roots: dict[str, Path] | None = None, device: str | None = None,
              skip_invalid: bool = False, quiet: bool = False, out=None, launcher: str | None = None,
              launcher_options: dict[str, Any] | None = None) -> SuiteResult:
    """Train every job not yet done, run the listed evaluations, write the reports.

    Finished jobs are skipped; failed and incomplete ones run again (the runner resumes from
    their last checkpoint when there is one); jobs another live process owns (its lease, see
    fairbench.run_lease) are left to it, so several ``suite run``s of one suite share the work.
    ``launcher`` (default: the suite's ``[launcher] default``, else ``local``) decides where the
    jobs run; ``launcher_options`` override its ``[launcher.NAME]`` table; ``jobs`` is the local
    launcher's worker count. A launcher that only submits (Slurm without ``wait``) leaves the
    evaluations and reports to a later ``suite run``."""
    from fairbench.launchers.base import LaunchContext, make_launcher

    out = out or sys.stdout
    runs_dir = Path(runs_dir)
    options = dict(launcher_options or {})
    if jobs is not None:
        options["jobs"] = jobs
    chosen = make_launcher(launcher, suite.launcher, options, str(suite.path))
    all_jobs = suite.resolve(data_roots, device)
    invalid = [j for j in all_jobs if j.error]
    if invalid and not (skip_invalid or dry_run):
        lines = "\n".join(f"  job {j.index} ({j.describe()}): {j.error}" for j in invalid)
        raise ConfigError(f"{len(invalid)} of {len(all_jobs)} jobs of {suite.path} do not resolve "
                          f"(nothing was run; pass --skip-invalid to run the others):\n{lines}")
    before = {j.index: job_state(j, runs_dir) for j in all_jobs}
    result = SuiteResult(all_jobs, before)
    todo = [j for j in all_jobs if before[j.index].state in ("pending", "failed", "incomplete")]
    if dry_run:
        print_jobs(all_jobs, before, out, dry_run=True)
        print(f"\n{len(todo)} of {len(all_jobs)} jobs would run through {chosen.describe(len(todo))}"
              + f"; runs under {runs_dir}/, reports in {runs_dir / suite.report_dir_name}/", file=out)
        return result
    done_before = sum(1 for s in before.values() if s.state in ("done", "running", "queued", "invalid"))
    with SuiteProgress(len(all_jobs), done_before, quiet=quiet) as progress:
        skipped = [j for j in all_jobs if before[j.index].state == "done"]
        if skipped:
            progress.log(f"{len(skipped)} of {len(all_jobs)} jobs already done: skipped")
        for job in all_jobs:
            if before[job.index].state in ("running", "queued", "invalid"):
                progress.log(f"skip {job.run_id or 'job ' + str(job.index)}: {before[job.index].state} "
                             f"({before[job.index].detail})")
        ctx = LaunchContext(suite, runs_dir, progress, result, data_roots=dict(data_roots or {}))
        try:
            if todo:
                chosen.launch(todo, ctx)
        except KeyboardInterrupt:
            result.interrupted = True
            progress.log("interrupted: run the same command again to resume")
            raise
        result.busy = ctx.busy
        if result.submitted:  # a batch scheduler has them: evaluations and reports in a later `suite run`
            progress.log(f"{len(result.submitted)} jobs submitted; `fairbench suite status {suite.path}` follows them; "
                         "run this command again once they are done for the evaluations and the report")
            return result
        _run_evaluations(all_jobs, runs_dir, progress, result, data_roots or {})
    result.outputs = write_reports(suite, runs_dir, out=sys.stderr)
    return result


def _run_evaluations(all_jobs: list[Job], runs_dir: Path, progress: SuiteProgress, result: SuiteResult,
                     data_roots: dict[str, Path]) -> None:
    from fairbench.run_store import RunRecord

    wanted = []
    for job in all_jobs:
        if not job.evaluations or job.error:
            continue
        path = runs_dir / job.run_id
        if not path.is_dir() or RunRecord(path).status().get("state") != "done":
            continue
        wanted += [(job, e) for e in job.evaluations if not (path / "evaluations" / e.folder / "metrics.json").is_file()]
    if not wanted:
        return
    try:
        from fairbench.cross_eval import evaluate_run
    except ImportError as exc:
        progress.log(f"cross-dataset evaluations skipped ({len(wanted)} listed in the suite): fairbench.cross_eval "
                     f"is not available ({exc}); run the suite again once it is installed")
        return
    for job, spec in wanted:
        root = data_roots.get(spec.dataset)
        progress.log(f"evaluate {job.run_id} on {spec.dataset} {spec.split}")
        try:
            evaluate_run(runs_dir / job.run_id, spec.dataset, data_root=root, split=spec.split, options=dict(spec.options))
        except Exception as exc:  # one missing dataset must not stop the others
            result.evaluation_errors.append((job.index, spec.folder, f"{type(exc).__name__}: {exc}"))
            progress.log(f"  evaluation failed: {type(exc).__name__}: {exc}")
            continue
        result.evaluated.append((job.index, spec.folder))


def write_reports(suite: Suite, runs_dir: Path, out=None) -> list[Path]:
    """``<runs-dir>/suite-<name>/table.md`` (every layout of [report]) and ``pareto.png``."""
    from fairbench.plots import PlotError, plot_pareto
    from fairbench.reporting import compare
    from fairbench.run_store import atomic_write_bytes
    from fairbench.tables import finished, load_records, select_suite

    out = out or sys.stderr
    folder = Path(runs_dir) / suite.report_dir_name
    text, skipped = compare(runs_dir, layouts=list(suite.report.layouts), fmt="markdown", suite_file=suite.path)
    if not text:
        print(f"no finished run of suite {suite.name} under {runs_dir}: no report written", file=out)
        return []
    done, _ = finished(select_suite(*load_records(runs_dir), suite)[0])
    parts = [f"# Suite {suite.name}\n\n", suite.description.strip() + "\n\n" if suite.description else "",
             f"{len(done)} finished runs of {len(suite.jobs())} jobs ({suite.path}).\n\n", text]
    if skipped:
        parts.append("\n## Runs not in the tables\n\n" + "".join(f"- `{rid}`: {why}\n" for rid, why in skipped))
    written = [folder / "table.md"]
    atomic_write_bytes(written[0], "".join(parts).encode())
    for i, spec in enumerate(suite.report.pareto):
        target = folder / ("pareto.png" if i == 0 else f"pareto-{spec.x}-{spec.y}.png")
        try:
            plot_pareto(done, spec.x, spec.y, target, by=spec.by)
        except PlotError as exc:
            print(f"pareto plot {spec.y} vs {spec.x} not drawn: {exc}", file=out)
            continue
        written.append(target)
    for path in written:
        print(f"wrote {path}", file=out)
    return written


# -- listing --------------------------------------------------------------------------------------

def print_jobs(jobs: list[Job], states: dict[int, JobState], out=None, dry_run: bool = False) -> None:
    from tabulate import tabulate

    out = out or sys.stdout
    rows = []
    for job in jobs:
        st = states[job.index]
        action = ""
        if dry_run:
            action = {"pending": "run", "failed": "retry", "incomplete": "resume", "done": "skip (done)",
                      "running": "skip (running)", "queued": "skip (queued)", "invalid": "cannot run"}[st.state]
        spec = {k: v for k, v in job.spec.items() if k not in ("method", "train.seed")}
        varying = _varying_keys(jobs)
        row = [job.index, job.run_id or "—", job.method, job.seed,
               ", ".join(f"{k}={_short(spec[k])}" for k in varying if k in spec) or "—", st.state,
               st.detail or "—"]
        if dry_run:
            row.insert(6, action)
        rows.append(row)
    headers = ["#", "run id", "method", "seed", "varies", "state", "detail"]
    if dry_run:
        headers.insert(6, "action")
    print(tabulate(rows, headers=headers, tablefmt="simple"), file=out)


def _varying_keys(jobs: list[Job]) -> list[str]:
    keys: list[str] = []
    for job in jobs:
        for k in job.spec:
            if k not in keys and k not in ("method", "train.seed"):
                keys.append(k)
    return [k for k in keys if len({json.dumps(j.spec.get(k), sort_keys=True) for j in jobs}) > 1]


def suite_status(suite: Suite, runs_dir: Path, out=None) -> dict[str, int]:
    out = out or sys.stdout
    jobs = suite.resolve()
    states = {j.index: job_state(j, runs_dir) for j in jobs}
    print(f"suite {suite.name} ({suite.path}): {len(jobs)} jobs, runs under {runs_dir}/", file=out)
    print_jobs(jobs, states, out)
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    order = ["done", "running", "queued", "failed", "incomplete", "pending", "invalid"]
    print("\n" + ", ".join(f"{counts[s]} {s}" for s in order if s in counts), file=out)
    return counts
