"""The ``fairbench`` command line. Imports stay inside the handlers so that help is instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_USAGE = 2


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
    p.add_argument("--selection", choices=["accuracy", "worst_group_accuracy", "last"],
                   help="checkpoint selection rule on validation (default: the method's)")
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
        "selection": args.selection,
    }


def cmd_run(args: argparse.Namespace) -> int:
    from fairbench.config import build_config, resolve
    from fairbench.progress import Reporter
    from fairbench.reporting import run_summary
    from fairbench.run_store import RunRecord
    from fairbench.runner import RunAlreadyDone, execute

    cfg = resolve(build_config(args.config, _overrides(args, args.method), args.sets))
    reporter = Reporter(quiet=args.quiet)
    try:
        path = execute(cfg, args.runs_dir, force=args.force, reporter=reporter)
    except RunAlreadyDone as done:
        reporter.log(f"already done: {done.path}\n(same resolved configuration; pass --force to train it again)")
        path = done.path
    metrics = RunRecord(path).metrics()
    from rich.console import Console

    Console().print(run_summary(metrics))
    print(f"run folder: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fairbench.reporting import collect_runs, compare_table, format_compare

    runs, skipped = collect_runs(args.runs_dir)
    for run, reason in skipped:
        print(f"skipped {run}: {reason}", file=sys.stderr)
    if runs.empty:
        print(f"no finished runs under {args.runs_dir}", file=sys.stderr)
        return 1
    text = format_compare(compare_table(runs), args.format)
    if args.output:
        from fairbench.run_store import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode())
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from fairbench.metrics import read_predictions, score_frame
    from fairbench.run_store import clean_nan

    frame = read_predictions(args.file)
    report = score_frame(frame, target=args.target, pred=args.pred, groups=args.groups.split(","),
                         scores=args.scores.split(",") if args.scores else None,
                         min_support=args.min_support, ddof=args.ddof, positive=args.positive)
    if args.json:
        print(json.dumps(clean_nan(report), indent=2))
        return 0
    from rich.console import Console

    from fairbench.reporting import run_summary

    Console().print(run_summary({"test": report, "selection": {"epoch": -1, "rule": "n/a"}}, "test"))
    for line in report.get("undefined", []):
        print(f"undefined: {line}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fairbench.config import ConfigError, parse_value
    from fairbench.cross_eval import evaluate_run, summary_table
    from fairbench.run_store import RunRecord

    options, cache_dir = {}, None
    for pair in args.sets:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if sep and key.startswith("data.options.") and len(key) > len("data.options."):
            options[key[len("data.options."):]] = parse_value(text.strip())
        elif sep and key == "data.cache_dir":
            cache_dir = Path(text.strip())
        else:
            raise ConfigError(f"fairbench eval --set accepts data.options.NAME=VALUE and data.cache_dir=PATH, got {pair!r}")
    evaluation = evaluate_run(args.run_dir, args.dataset, data_root=args.data_root, split=args.split, options=options,
                              cache_dir=cache_dir, device=args.device,
                              protected=tuple(args.protected.split(",")) if args.protected else None)
    from rich.console import Console

    Console().print(summary_table(evaluation, RunRecord(args.run_dir).metrics()))
    print(f"wrote {evaluation.folder}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fairbench import registry
    from fairbench.registry import summary_of

    reg = registry.REGISTRIES[args.kind]
    rows = []
    for name, obj in reg.items():
        row = [name, summary_of(obj)]
        if args.kind == "methods":
            from fairbench.methods.base import needs_label

            row.insert(1, needs_label(obj))
        rows.append(row)
    from tabulate import tabulate

    headers = ["name", "needs in training", "summary"] if args.kind == "methods" else ["name", "summary"]
    print(tabulate(rows, headers=headers, tablefmt="simple"))
    if args.kind == "methods":
        print("\nneeds: T = target labels only; T+A = also the protected attribute; +V = group labels on validation (selection)")
    for failure in reg.failures():
        print(f"warning: {args.kind[:-1]} {failure.name!r} from distribution {failure.distribution!r} failed to import: "
              f"{failure.error}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairbench",
        description="Train, evaluate and compare bias-mitigation methods for facial attribute classification.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train and evaluate one method (default dataset: built-in synthface)")
    p.add_argument("method", help="method name (see `fairbench list methods`)")
    _add_run_options(p)
    p.add_argument("--force", action="store_true", help="re-run a configuration that already finished")
    p.add_argument("--quiet", action="store_true", help="plain log lines instead of progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="one row per (method, dataset, task): mean ± 95%% CI over seeds")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--format", choices=["table", "markdown", "csv", "latex", "json"], default="table")
    p.add_argument("--output", type=Path, help="write to this file instead of standard output")
    p.set_defaults(func=cmd_compare)

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
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("list", help="list registered methods, datasets, backbones or metrics")
    p.add_argument("kind", choices=["methods", "datasets", "backbones", "metrics"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("eval", help="evaluate a finished run on another dataset (cross-dataset, per-group table)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--dataset", required=True, help="dataset to evaluate on, e.g. utkface, lfwa, celeba")
    p.add_argument("--data-root", type=Path, help="folder holding that dataset's files (default: its environment variable)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--protected", help="group columns, comma separated (default: the dataset's)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="data.options.NAME=VALUE or data.cache_dir=PATH (repeatable)")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
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
    from fairbench.datasets.base import DatasetError
    from fairbench.registry import RegistryError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, RegistryError, BackboneError, FileNotFoundError, ValueError) as exc:
        print(f"fairbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
