"""The ``fairbench`` command line. Imports stay inside the handlers so that help is instant."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset name (default: the built-in synthetic benchmark, synthface)")
    p.add_argument("--data-root", type=Path, help="folder holding the dataset's files")
    p.add_argument("--target", help="target attribute (default: the dataset's)")
    p.add_argument("--protected", help="protected attribute(s), comma separated (default: the dataset's)")
    p.add_argument("--backbone", help="backbone name, e.g. resnet50, resnet_tiny, timm/resnet10t")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: OMP_NUM_THREADS if set, else the cores this process may use "
                        "less those other processes keep busy; never more than the cores)")
    p.add_argument("--selection", metavar="RULE",
                   help="checkpoint selection rule on validation: accuracy, worst_group_accuracy (+V), last, or a "
                        "plugin's (`fairbench list selection`; default: the method's)")
    p.add_argument("--max-train-samples", type=int, metavar="N", help="subsample the training split (smoke runs)")
    p.add_argument("--max-eval-samples", type=int, metavar="N", help="subsample val and test (smoke runs)")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML run configuration")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override any field, e.g. --set train.lr=0.01 --set hparams.eta=0.1 (repeatable)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: ./runs)")


def _overrides(args: argparse.Namespace, method: str | None) -> dict:
    return {
        "method": method,
        "data.name": args.dataset,
        "data.root": str(args.data_root) if args.data_root else None,
        "data.target": args.target,
        "data.protected": args.protected.split(",") if args.protected else None,
        "data.image_size": args.image_size,
        "data.max_train_samples": args.max_train_samples,
        "data.max_eval_samples": args.max_eval_samples,
        "backbone.name": args.backbone,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.seed": args.seed,
        "train.device": args.device,
        "train.threads": args.threads,
        "selection": args.selection,
    }


def cmd_run(args: argparse.Namespace) -> int:
    from fairbench.compute import default_threads
    from fairbench.config import ConfigError, build_config, resolve
    from fairbench.results.reporting import run_summary
    from fairbench.runs.lifecycle import RunAlreadyDone
    from fairbench.runs.record import RunRecord
    from fairbench.training import timing
    from fairbench.training.run import execute
    from fairbench.training.run_progress import Reporter

    timing.begin_job(timing.process_started())  # the run's time breakdown counts Python's start and the imports
    cfg = build_config(args.config, _overrides(args, args.method), args.sets)
    if cfg.data.fingerprint is not None:  # "start again" cannot help: every start compares it with the data anew
        given = next((f"--set {s}" for s in args.sets or [] if s.replace(" ", "").startswith("data.fingerprint=")),
                     f"the fingerprint key of {args.config}")
        raise ConfigError(f"data.fingerprint is computed from the data when a run starts, not set: drop {given}")
    cfg = resolve(cfg)
    if cfg.train.threads is None:
        import torch

        torch.set_num_threads(default_threads())
    reporter = Reporter(quiet=args.quiet)
    from fairbench.distributed import is_main_process

    try:
        path = execute(cfg, args.runs_dir, force=args.force, reporter=reporter)
    except RunAlreadyDone as done:
        if is_main_process():
            reporter.log(f"already done: {done.path}\n(same resolved configuration and data; pass --force to train it "
                         "again: the finished run is kept until the new one is done)")
        path = done.path
    if not is_main_process():  # torchrun: rank 0 reports
        return 0
    record = RunRecord(path)
    metrics = record.metrics()
    from rich.console import Console

    from fairbench.results.reporting import run_notes

    Console().print(run_summary(metrics))
    for note in run_notes(record):
        print(f"note: {note}")
    print(f"run folder: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fairbench.results.reporting import compare
    from fairbench.suites.suite import Suite

    suite = Suite.load(args.suite) if args.suite else None
    text, skipped = compare(args.runs_dir, layouts=[args.layout] if args.layout else None, fmt=args.format,
                            suite=suite, paper=args.paper, needs=args.needs, by=args.by, dataset=args.dataset,
                            allow_mixed_revisions=args.allow_mixed_revisions)
    for run, reason in skipped:
        print(f"skipped {run}: {reason}", file=sys.stderr)
    if not text:
        print(f"no finished runs under {args.runs_dir}" + (f" of suite {args.suite}" if args.suite else ""), file=sys.stderr)
        return 1
    if args.output:
        from fairbench.runs.store import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode())
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _data_roots(pairs: list[str]) -> dict[str, Path]:
    from fairbench.config import ConfigError

    roots = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--data-root expects DATASET=PATH, got {pair!r} (e.g. --data-root fairface=/data/fairface)")
        roots[name.strip()] = Path(path.strip())
    return roots


def cmd_suite_run(args: argparse.Namespace) -> int:
    from fairbench.suites.launchers.suite_run import run_suite
    from fairbench.suites.suite import Suite

    suite = Suite.load(args.file)
    result = run_suite(suite, args.runs_dir, jobs=args.jobs, dry_run=args.dry_run, data_roots=_data_roots(args.data_root),
                       device=args.device, skip_invalid=args.skip_invalid, quiet=args.quiet, launcher=args.launcher,
                       launcher_options=_launcher_options(args), allow_mixed_revisions=args.allow_mixed_revisions)
    if args.dry_run:
        return 0
    print(result.summary())
    if result.failed or result.evaluation_errors:
        for index, error in result.failed.items():
            print(f"job {index} failed: {error}", file=sys.stderr)
        for index, folder, error in result.evaluation_errors:
            print(f"job {index}: evaluation {folder} failed: {error}", file=sys.stderr)
        print("run the same command again to retry what failed", file=sys.stderr)
        return 1
    return 0


def _launcher_options(args: argparse.Namespace) -> dict:
    """The launcher flags given on the command line (the launcher checks that it knows them)."""
    from fairbench.config import parse_set

    options = {key: getattr(args, key) for key in LAUNCHER_FLAGS if getattr(args, key) not in (None, [])}
    if args.gpus is not None:
        options["gpus"] = [] if args.gpus.strip().lower() in ("none", "") else args.gpus.split(",")
    for pair in args.launcher_option:
        key, value = parse_set(pair, "--launcher-option")
        options[key.replace("-", "_")] = value
    return options


#: ``suite run`` flags that are launcher options (argparse dest = option name)
LAUNCHER_FLAGS = ("jobs_per_gpu", "threads", "partition", "time", "gpus_per_job", "cpus_per_job", "mem_gb",
                  "array_parallelism", "account", "qos", "sbatch", "setup", "wait")


def cmd_suite_status(args: argparse.Namespace) -> int:
    from fairbench.suites.launchers.suite_run import suite_status
    from fairbench.suites.suite import Suite

    if args.json:
        from fairbench.suites.launchers.suite_run import status_json

        print(json.dumps(status_json(Suite.load(args.file), args.runs_dir, _data_roots(args.data_root)), indent=2,
                         default=str))
        return 0
    suite_status(Suite.load(args.file), args.runs_dir, data_roots=_data_roots(args.data_root))
    return 0


def cmd_plot_pareto(args: argparse.Namespace) -> int:
    from fairbench.results.plots import plot_pareto
    from fairbench.results.reporting import load_selected, pareto_points
    from fairbench.suites.suite import Suite

    done, skipped = load_selected(args.runs_dir, Suite.load(args.suite) if args.suite else None)
    for run, reason in skipped:
        print(f"skipped {run}: {reason}", file=sys.stderr)
    done, subtitle = pareto_points(done, args.rule)
    drawn = plot_pareto(done, args.x, args.y, args.output, dataset=args.dataset, facet=args.facet, by=args.by,
                        paper=args.paper, subtitle=subtitle)
    from fairbench.results.plots import pareto_front

    for panel in drawn:
        front = pareto_front(panel.points, args.x, args.y)
        print(f"{panel.title}: Pareto front = {', '.join(p.label for p in front)}")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _suite_or_runs(source: Path, runs_dir: Path):
    """(the loaded suite or None, the runs folder) of a SUITE_OR_RUNS_DIR argument."""
    from fairbench.suites.suite import Suite

    if source.is_dir():
        return None, source
    if source.is_file():
        return Suite.load(source), runs_dir
    raise FileNotFoundError(f"{source}: no such suite file or runs folder; give a suite (benchmarks/*.toml, its runs "
                            "under --runs-dir) or a runs folder")


def _said_what_was_left_out(skipped, wrote: bool, runs_dir: Path, suite) -> bool:
    """Print the runs left out (and that nothing was written, if so); False when nothing was."""
    for run, reason in skipped:
        print(f"skipped {run}: {reason}", file=sys.stderr)
    if not wrote:
        print(f"no finished runs under {runs_dir}" + (f" of suite {suite.path}" if suite else "") + ": nothing written",
              file=sys.stderr)
    return wrote


def cmd_report(args: argparse.Namespace) -> int:
    from fairbench.results.report_html import check_output, write_report

    suite, runs_dir = _suite_or_runs(args.source, args.runs_dir)
    output = check_output(args.output or (runs_dir / suite.report_dir_name if suite else runs_dir) / "report.html")
    path, skipped = write_report(runs_dir, output, suite, allow_mixed_revisions=args.allow_mixed_revisions)
    if not _said_what_was_left_out(skipped, path is not None, runs_dir, suite):
        return 1
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fairbench.results.export import check_output, export_runs

    check_output(args.output)
    suite, runs_dir = _suite_or_runs(args.source, args.runs_dir)
    frame, skipped = export_runs(runs_dir, args.output, suite)
    if not _said_what_was_left_out(skipped, frame is not None, runs_dir, suite):
        return 1
    print(f"wrote {args.output} ({len(frame)} rows, {frame['run_id'].nunique()} runs)", file=sys.stderr)
    return 0


def cmd_plot_curves(args: argparse.Namespace) -> int:
    from fairbench.results.plots import plot_curves

    labels = plot_curves(args.run_dirs, args.output)
    print(f"wrote {args.output} ({len(labels)} runs)", file=sys.stderr)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from fairbench.metrics import read_predictions, score_frame
    from fairbench.runs.store import clean_nan

    frame = read_predictions(args.file)
    report = score_frame(frame, target=args.target, pred=args.pred, groups=args.groups.split(","),
                         scores=args.scores.split(",") if args.scores else None,
                         min_support=args.min_support, ddof=args.ddof, positive=args.positive,
                         bootstrap=args.bootstrap)
    if args.json:
        print(json.dumps(clean_nan(report), indent=2))
        return 0
    from rich.console import Console

    from fairbench.results.reporting import run_summary

    Console().print(run_summary({"test": report, "selection": {"epoch": -1, "rule": "n/a"}}, "test"))
    for line in report.get("undefined", []):
        print(f"undefined: {line}")
    for name, ci in (report.get("bootstrap") or {}).items():
        print(f"{name}: {ci['confidence']:.0%} bootstrap interval over test samples [{ci['low']:.3f}, {ci['high']:.3f}] "
              f"({ci['n_resamples']} resamples, seed {ci['seed']}" + (f", {ci['n_dropped']} undefined" if ci["n_dropped"] else "")
              + ")")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fairbench.config import ConfigError, parse_set
    from fairbench.evaluation.cross_eval import evaluate_run, summary_table
    from fairbench.runs.record import RunRecord

    options, cache_dir = {}, None
    for pair in args.sets:
        key, value = parse_set(pair)
        if key.startswith("data.options.") and len(key) > len("data.options."):
            options[key[len("data.options."):]] = value
        elif key == "data.cache_dir":
            cache_dir = Path(str(value))
        else:
            raise ConfigError(f"fairbench eval --set accepts data.options.NAME=VALUE and data.cache_dir=PATH, got {pair!r}")
    evaluation = evaluate_run(args.run_dir, args.dataset, data_root=args.data_root, split=args.split, options=options,
                              cache_dir=cache_dir, device=args.device,
                              protected=tuple(args.protected.split(",")) if args.protected else None)
    from rich.console import Console

    Console().print(summary_table(evaluation, RunRecord(args.run_dir).metrics()))
    if evaluation.beside is not None:
        from fairbench.evaluation.cross_eval import recorded_fingerprint

        earlier = recorded_fingerprint(evaluation.beside) or "not recorded"
        print(f"note: {evaluation.beside} holds an evaluation of other {args.dataset} data (fingerprint {earlier}; "
              f"this data: {evaluation.metrics['data_fingerprint']['digest']}): both are kept, compare lists both")
    print(f"wrote {evaluation.folder}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from fairbench.evaluation.explain import explain_run

    path = explain_run(args.run_dir, args.output, images=args.images, image_files=args.image_files,
                       baseline=args.baseline, split=args.split, data_root=args.data_root, device=args.device,
                       seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fairbench import registry
    from fairbench.registry import summary_of

    reg = registry.REGISTRIES[args.kind]
    rows = []
    for name, obj in reg.items():
        row = {"name": name, "summary": summary_of(obj)}
        if args.kind == "methods":
            from fairbench.methods.base import needs_label

            row = {"name": name, "needs": needs_label(obj), "summary": row["summary"]}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from tabulate import tabulate

        headers = ["name", "needs in training", "summary"] if args.kind == "methods" else ["name", "summary"]
        print(tabulate([list(r.values()) for r in rows], headers=headers, tablefmt="simple"))
        if args.kind == "methods":
            print("\nneeds: T = target labels only; T+A = also the protected attribute; +V = group labels on validation "
                  "(selection)")
    for failure in reg.failures():
        print(f"warning: {args.kind[:-1]} {failure.name!r} from distribution {failure.distribution!r} failed to import: "
              f"{failure.error}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from fairbench import registry
    from fairbench.methods.base import needs_label
    from fairbench.registry import summary_of
    from fairbench.search_spaces import describe_space

    if args.kind == "run":
        return _show_run(args)
    method = registry.methods.get(args.name)
    if args.json:
        print(json.dumps({"name": args.name, "summary": summary_of(method), "needs": needs_label(method),
                          "default_selection": method.default_selection, "profile_defaults": method.profile_defaults,
                          "backbone_rule": getattr(method, "backbone_rule", None) or None,
                          "hyperparameters": describe_space(method.Hparams, args.profile)}, indent=2, default=str))
        return 0
    print(f"{args.name}: {summary_of(method)}")
    print(f"needs in training: {needs_label(method)}; default selection: {method.default_selection}")
    for profile, defaults in method.profile_defaults.items():
        print(f"defaults on the {profile} profile: {defaults}")
    if method.backbone_rule:
        from fairbench.config import PROFILES

        print(f"follows the backbone: {method.backbone_rule}")
        for profile in [args.profile] if args.profile else list(PROFILES):
            defaults = method.profile_defaults.get(profile, {})
            backbone = defaults.get("backbone", {}).get("name") or PROFILES[profile]["backbone"]["name"]
            scaled = method.backbone_hparams(method.Hparams.model_validate(defaults.get("hparams", {})), backbone)
            print(f"  on the {profile} profile ({backbone}): {', '.join(f'{k} = {v}' for k, v in scaled.items())}")
    rows = describe_space(method.Hparams, args.profile)
    print()
    print(tabulate([[r["key"], r["default"], r["search"], r["description"]] for r in rows],
                   headers=["key", "default", "search space", "description"], tablefmt="simple"))
    print("\nTrial 0 of a search is the defaults; other trials draw every searched key (fixed keys keep "
          "their default).")
    return 0


def _show_run(args: argparse.Namespace) -> int:
    """``show run RUN_DIR``: where the run's wall time went (fairbench.training.timing), and its training cost."""
    from tabulate import tabulate

    from fairbench.runs.record import RunRecord
    from fairbench.runs.store import RunStoreError

    record = RunRecord(Path(args.name))
    if not (record.path / "metrics.json").is_file():
        print(f"fairbench show run: {record.path} is not a finished run folder (no metrics.json); pass the folder of "
              "a finished run", file=sys.stderr)
        return EXIT_USAGE
    try:
        metrics = record.metrics()
    except (RunStoreError, OSError, ValueError) as exc:
        print(f"fairbench show run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if metrics is None or "timing" not in metrics:
        print(f"fairbench show run: {args.name} has no time breakdown (an unfinished run, or one recorded before "
              "fairbench.training.timing); run it again to get one", file=sys.stderr)
        return EXIT_USAGE
    timing, cost = metrics["timing"], metrics.get("cost", {})
    if args.json:
        print(json.dumps({"run": str(record.path), "timing": timing, "train_seconds": cost.get("train_seconds"),
                          "train_flops": cost.get("train_flops")}, indent=2))
        return 0
    total = timing["total_s"] or 1.0
    rows = [[name, f"{s:.2f}", f"{100 * s / total:.1f}"] for name, s in timing["phases_s"].items()]
    rows.append(["total", f"{timing['total_s']:.2f}", "100.0"])
    print(f"{record.path}: wall time from the job's start ({timing['started']}) to its metrics")
    print(tabulate(rows, headers=["phase", "seconds", "%"], tablefmt="simple", disable_numparse=True))
    for name, at in timing.get("marks_s", {}).items():
        print(f"{name.replace('_', ' ')} at {at:.2f} s")
    if "resumed_at_epoch" in timing:
        print(f"resumed at epoch {timing['resumed_at_epoch']}: the phases are the resumed attempt's; the training "
              f"updates of every attempt took {cost.get('train_seconds', float('nan')):.2f} s (cost.train_seconds)")
    return 0


def _add_source(p: argparse.ArgumentParser, help_text: str) -> None:
    """`report` and `export` read a suite's runs or a plain runs folder."""
    p.add_argument("source", type=Path, metavar="SUITE_OR_RUNS_DIR", help=help_text)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="a suite's runs (default: ./runs)")


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench run``."""
    p = sub.add_parser("run", help="train and evaluate one method (default dataset: built-in synthface)")
    p.add_argument("method", help="method name (see `fairbench list methods`)")
    _add_run_options(p)
    p.add_argument("--force", action="store_true", help="re-run a configuration that already finished")
    p.add_argument("--quiet", action="store_true", help="plain log lines instead of progress bars")
    p.set_defaults(func=cmd_run)


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench compare``."""
    p = sub.add_parser("compare", help="one row per (method, dataset, task): mean ± 95%% CI over seeds")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--format", choices=["table", "markdown", "csv", "latex", "json"], default="table")
    p.add_argument("--output", type=Path, help="write to this file instead of standard output")
    p.add_argument("--layout", metavar="NAME",
                   help="summary (default); the paper's: groups (tables 2-4), methods (5), attributes (6-7), "
                        "min-group (8); or a plugin's (`fairbench list layouts`); default with --suite: the suite's "
                        "[report] layouts")
    p.add_argument("--suite", type=Path, metavar="FILE", help="only the runs of this suite (benchmarks/*.toml)")
    p.add_argument("--allow-mixed-revisions", action="store_true",
                   help="with --suite: make its tables from runs of several code revisions (or a dirty tree), "
                        "with a note listing them; refused otherwise")
    p.add_argument("--paper", action=argparse.BooleanOptionalAction, default=None,
                   help="show the paper's published rows (default: when the runs use the paper's setting)")
    p.add_argument("--needs", action=argparse.BooleanOptionalAction, default=None,
                   help="column of what each method needs in training (default: on in the methods layout)")
    p.add_argument("--by", metavar="ATTR", help="methods layout: groups = values of this protected column "
                                               "(default: race when the groups are race x gender)")
    p.add_argument("--dataset", metavar="NAME", help="only the reports evaluated on this dataset")
    p.set_defaults(func=cmd_compare)


def _add_score_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench score``."""
    p = sub.add_parser("score", help="every metric from a predictions CSV / Parquet file of any model")
    p.add_argument("file", type=Path)
    p.add_argument("--target", required=True, help="column of true labels")
    p.add_argument("--pred", required=True, help="column of predicted labels")
    p.add_argument("--groups", required=True, help="protected column(s), comma separated (intersected)")
    p.add_argument("--scores", help="probability columns, comma separated, in class order (for ECE)")
    p.add_argument("--positive", help="the positive label for rate metrics (default: 1 / True / second label)")
    p.add_argument("--min-support", type=int, default=0, help="exclude groups smaller than this from max/min")
    p.add_argument("--ddof", type=int, default=0, help="DoB standard deviation ddof (0: population, the paper's)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="add 95%% percentile bootstrap intervals over the samples (N resamples, seed 0) of every metric")
    p.set_defaults(func=cmd_score)


def _add_list_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench list``."""
    p = sub.add_parser("list", help="list registered methods, datasets, backbones, metrics, selection rules, "
                                     "launchers or layouts")
    p.add_argument("kind", choices=["methods", "datasets", "backbones", "metrics", "selection", "launchers", "layouts"])
    p.add_argument("--json", action="store_true", help="a JSON list of {name, summary (, needs)}, for scripts")
    p.set_defaults(func=cmd_list)


def _add_show_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench show``."""
    p = sub.add_parser("show", help="one method in full (hyperparameters, defaults, search space, needs), or "
                                     "where one run's wall time went")
    p.add_argument("kind", choices=["method", "run"])
    p.add_argument("name", help="method name (see `fairbench list methods`), or a run folder for `show run`")
    p.add_argument("--profile", choices=["cpu-small", "paper"],
                   help="show only this dataset profile's training search space")
    p.add_argument("--json", action="store_true", help="the same as one JSON object, for scripts")
    p.set_defaults(func=cmd_show)


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench eval``."""
    p = sub.add_parser("eval", help="evaluate a finished run on another dataset (cross-dataset, per-group table)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--dataset", required=True, help="dataset to evaluate on, e.g. utkface, lfwa, celeba")
    p.add_argument("--data-root", type=Path, help="folder holding that dataset's files (default: its environment variable)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="the split to evaluate (default test); all = every image of the dataset, its splits together")
    p.add_argument("--protected", help="group columns, comma separated (default: the dataset's)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="data.options.NAME=VALUE or data.cache_dir=PATH (repeatable)")
    p.set_defaults(func=cmd_eval)


def _add_explain_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench explain``."""
    p = sub.add_parser("explain", help="attention maps of a trained run, one row per face (FineFACE's figure 3)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--images", type=int, default=6, metavar="N",
                   help="N faces from the run's split, the demographic groups in turn (default 6)")
    p.add_argument("--image", type=Path, action="append", default=[], metavar="PATH", dest="image_files",
                   help="explain this image file instead (repeatable)")
    p.add_argument("--baseline", type=Path, metavar="RUN_DIR", help="a second run shown alongside, e.g. ERM's CAM")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data-root", type=Path, help="where the run's dataset is now (default: as recorded)")
    p.add_argument("--seed", type=int, default=0, help="which faces are sampled (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--output", type=Path, required=True, metavar="FILE", help="FILE.png (or .svg / .pdf)")
    p.set_defaults(func=cmd_explain)


def _add_suite_run_parser(suite_sub: argparse._SubParsersAction) -> None:
    """``fairbench suite run FILE``."""
    q = suite_sub.add_parser("run", help="train every job not yet done, run its evaluations, write table and plot")
    q.add_argument("file", type=Path, metavar="FILE", help="suite file, e.g. benchmarks/quickstart.toml")
    q.add_argument("--dry-run", action="store_true", help="list the jobs and what would run; train nothing")
    q.add_argument("--launcher", metavar="NAME", help="where the jobs run: local (default) or slurm, or a plugin's "
                                                      "(default: the suite's [launcher] default)")
    q.add_argument("--jobs", type=int, metavar="N", help="local: jobs trained at once in worker processes "
                                                         "(default: 1; on GPUs, one per GPU slot)")
    q.add_argument("--gpus", metavar="LIST", help="local: GPUs for the workers, e.g. 0,1 (default: every visible one; "
                                                  "none: CPU workers)")
    q.add_argument("--jobs-per-gpu", type=int, metavar="K", help="local: workers sharing each GPU (default 1)")
    q.add_argument("--threads", type=int, metavar="T", help="local: torch threads per worker (default: cores / workers)")
    q.add_argument("--partition", help="slurm: partition")
    q.add_argument("--time", help="slurm: time limit per job, minutes or HH:MM:SS (default 4:00:00)")
    q.add_argument("--gpus-per-job", type=int, metavar="N", help="slurm: GPUs per job (default 0)")
    q.add_argument("--cpus-per-job", type=int, metavar="N", help="slurm: CPUs per job (default 4; also its torch threads)")
    q.add_argument("--mem-gb", type=float, metavar="GB", help="slurm: memory per job (default: the partition's)")
    q.add_argument("--array-parallelism", type=int, metavar="N", help="slurm: jobs of the array running at once "
                                                                      "(default 64)")
    q.add_argument("--account", help="slurm: account to charge")
    q.add_argument("--qos", help="slurm: quality of service")
    q.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="slurm: another sbatch option, e.g. --sbatch=--constraint=a100 (repeatable)")
    q.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="slurm: a shell line run before each job, e.g. 'module load cuda' (repeatable)")
    q.add_argument("--wait", action="store_true", default=None,
                   help="slurm: wait for every job to end, then run the evaluations and write the report")
    q.add_argument("--launcher-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any launcher option (TOML value), e.g. signal_delay_s=300 (repeatable)")
    q.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: ./runs)")
    q.add_argument("--device", help="auto (default), cpu, cuda, cuda:N (not part of the run ids)")
    q.add_argument("--data-root", action="append", default=[], metavar="DATASET=PATH",
                   help="where a dataset's files are, e.g. fairface=/data/fairface (repeatable)")
    q.add_argument("--skip-invalid", action="store_true", help="run the jobs that resolve even if some do not")
    q.add_argument("--quiet", action="store_true", help="plain log lines instead of progress bars")
    q.add_argument("--allow-mixed-revisions", action="store_true",
                   help="train in a dirty tree or beside finished runs of another code revision, and make the "
                        "tables anyway with a note listing the revisions; refused otherwise")
    q.set_defaults(func=cmd_suite_run)


def _add_suite_status_parser(suite_sub: argparse._SubParsersAction) -> None:
    """``fairbench suite status FILE``."""
    q = suite_sub.add_parser("status", help="each job's state: done / running / queued / failed / incomplete / pending")
    q.add_argument("file", type=Path, metavar="FILE")
    q.add_argument("--runs-dir", type=Path, default=Path("runs"))
    q.add_argument("--data-root", action="append", default=[], metavar="DATASET=PATH",
                   help="where a dataset's files are, as given to suite run: the run ids hold the data's "
                        "fingerprint (repeatable)")
    q.add_argument("--json", action="store_true", help="every job and its state as one JSON object, for scripts")
    q.set_defaults(func=cmd_suite_status)


def _add_suite_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench suite``."""
    p = sub.add_parser("suite", help="run a benchmark suite (a grid of runs in a TOML file) or show its state")
    suite_sub = p.add_subparsers(dest="suite_command", metavar="ACTION", required=True)
    _add_suite_run_parser(suite_sub)
    _add_suite_status_parser(suite_sub)


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench report``."""
    p = sub.add_parser("report", help="one self-contained HTML page of a suite's or a runs folder's results "
                                       "(tables, plots, cost, curves, provenance); opens offline")
    _add_source(p, "a suite file (its runs under --runs-dir) or a runs folder")
    p.add_argument("--output", type=Path, metavar="FILE.html",
                   help="default: report.html beside the suite's table.md (<runs-dir>/suite-<name>/), or in the runs folder")
    p.add_argument("--allow-mixed-revisions", action="store_true",
                   help="a suite's runs of several code revisions (or a dirty tree): make the page with a note")
    p.set_defaults(func=cmd_report)


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench export``."""
    p = sub.add_parser("export", help="every finished run's metrics as one long table: a row per (run, evaluation, "
                                       "split, group, metric), with its configuration, cost and revision")
    _add_source(p, "a suite file (its runs under --runs-dir; fills the trial column) or a runs folder")
    p.add_argument("--output", type=Path, required=True, metavar="FILE",
                   help="FILE.parquet or FILE.csv (schema: docs/results-files.md)")
    p.set_defaults(func=cmd_export)


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    """``fairbench plot``."""
    p = sub.add_parser("plot", help="plots from run records")
    plot_sub = p.add_subparsers(dest="plot_command", metavar="KIND", required=True)
    q = plot_sub.add_parser("pareto", help="accuracy-fairness Pareto plot: methods with 95%% intervals, the front")
    q.add_argument("--runs-dir", type=Path, default=Path("runs"))
    q.add_argument("--suite", type=Path, metavar="FILE", help="only the runs of this suite")
    q.add_argument("--x", required=True, metavar="METRIC", help="e.g. dob, deo, deodds, max_min_ratio")
    q.add_argument("--y", required=True, metavar="METRIC", help="e.g. accuracy, worst_group_accuracy")
    q.add_argument("--output", type=Path, required=True, metavar="FILE", help="FILE.png, .svg or .pdf")
    q.add_argument("--dataset", metavar="NAME", help="only this evaluated dataset (default: one panel per dataset)")
    q.add_argument("--facet", action=argparse.BooleanOptionalAction, default=None,
                   help="one panel per evaluated dataset (default: when there are several)")
    q.add_argument("--by", metavar="ATTR", help="groups = values of this protected column (e.g. race)")
    q.add_argument("--paper", action=argparse.BooleanOptionalAction, default=None,
                   help="the paper's points as hollow markers (default: when the runs use the paper's setting)")
    q.add_argument("--rule", metavar="NAME", help="one point per method: each seed's search trial chosen by this "
                   "selection rule, as in the protocol tables (`fairbench list selection`); default: every setting")
    q.set_defaults(func=cmd_plot_pareto)
    q = plot_sub.add_parser("curves", help="training loss and validation accuracy per epoch of run folders (convergence)")
    q.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders (each with history.json)")
    q.add_argument("--output", type=Path, required=True, metavar="FILE", help="FILE.png, .svg or .pdf")
    q.set_defaults(func=cmd_plot_curves)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairbench",
        description="Train, evaluate and compare bias-mitigation methods for facial attribute classification.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(sub)
    _add_compare_parser(sub)
    _add_score_parser(sub)
    _add_list_parser(sub)
    _add_show_parser(sub)
    _add_eval_parser(sub)
    _add_explain_parser(sub)
    _add_suite_parser(sub)
    _add_report_parser(sub)
    _add_export_parser(sub)
    _add_plot_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line. Ctrl-C (SIGINT) at any point, the imports of the first seconds included,
    is one line on stderr and exit status 130 (128 + SIGINT, as the shell reports a process the
    signal ended), never a traceback."""
    seen: list[bool] = []

    def on_sigint(signum, frame):
        seen.append(True)
        if _importing(frame):
            # a KeyboardInterrupt raised inside an import can be swallowed or come out as another
            # error (numpy turns it into an ImportError, which torch takes for "no numpy" and goes
            # on): stop at once. A run stopped here is left as a killed one: incomplete, resumable.
            os.write(2, b"fairbench: interrupted\n")
            os._exit(EXIT_INTERRUPTED)
        raise KeyboardInterrupt  # remembered in ``seen``: C code may still turn it into another error

    previous = signal.getsignal(signal.SIGINT)
    ours = previous is signal.default_int_handler  # not when SIGINT is ignored (nohup) or a test harness holds it
    if ours:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        return _main(argv, seen)
    except BaseException as exc:
        if not (seen or isinstance(exc, KeyboardInterrupt)):
            raise
        if ours and argv is None:  # the program itself, not a test calling main: a second Ctrl-C while exiting ends it
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            ours = False
        # a run's says what became of its folder (fairbench.training.failure.RunInterrupted)
        said = str(exc) if isinstance(exc, KeyboardInterrupt) else ""
        print(f"fairbench: {said or 'interrupted'}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if ours:
            signal.signal(signal.SIGINT, previous)


def _data_notices_on_one_line(command: str, show_other):
    """A ``warnings.showwarning`` that prints a :class:`DataNotice` (files skipped, values
    normalised) as one ``warning:`` line, without Python's file:line and source line."""
    from fairbench.data.base import DataNotice

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataNotice):
            print(f"fairbench {command}: warning: {message}", file=file or sys.stderr)
        else:
            show_other(message, category, filename, lineno, file, line)

    return show


def _importing(frame) -> bool:
    """Whether ``frame`` runs inside an import (the import system's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _main(argv: list[str] | None, interrupted: list[bool]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(version("fairbench"))
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from fairbench.backbones.base import BackboneError
    from fairbench.config import ConfigError
    from fairbench.data.base import DatasetError
    from fairbench.registry import RegistryError
    from fairbench.runs.lease import LeaseLost

    try:
        with warnings.catch_warnings():  # restored after the command (tests call main in one process)
            warnings.showwarning = _data_notices_on_one_line(args.command, warnings.showwarning)
            return args.func(args)
    except (ConfigError, DatasetError, RegistryError, BackboneError, FileNotFoundError, ValueError) as exc:
        if interrupted:  # an interrupt that came out as another error (see main)
            raise
        print(f"fairbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LeaseLost as exc:  # another process took the run over: it is theirs now, this one stops
        print(f"fairbench {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
