"""Whether two trainings of the same suite give the same numbers, run by run.

    python benchmarks/same_numbers.py OLD/per-run.csv NEW/per-run.csv [--output same-numbers.json]

Joins two ``per-run.csv`` files (``benchmarks/protocol_records.py``) on the run id and compares
everything a run computes: validation and test metrics (per group too), epochs, optimizer steps,
training FLOPs, the last training loss, and every selection rule's kept trial and epoch. Times,
memory and the revision are left out: they are expected to differ. Exit status 1 when a run common
to both differs, or when either file has runs the other lacks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

COMPUTED = ("val_accuracy", "val_worst_group_accuracy", "test_accuracy", "test_worst_group_accuracy", "test_dob",
            "test_group_accuracy", "epochs", "optimizer_steps", "train_flops", "last_train_loss",
            "kept_by_accuracy", "kept_by_worst_group_accuracy", "kept_by_test_oracle",
            "epoch_by_accuracy", "epoch_by_worst_group_accuracy", "epoch_by_test_oracle")


def compare(old: pd.DataFrame, new: pd.DataFrame) -> dict:
    columns = [c for c in COMPUTED if c in old.columns and c in new.columns]
    joined = old[["run", *columns]].merge(new[["run", *columns]], on="run", suffixes=("", "_new")).set_index("run")
    differing = {}
    for run, row in joined.iterrows():
        changed = [c for c in columns if not _same(row[c], row[f"{c}_new"])]
        if changed:
            differing[run] = {c: [_plain(row[c]), _plain(row[f"{c}_new"])] for c in changed}
    return {"compared_columns": columns, "runs_in_both": len(joined),
            "only_old": sorted(set(old["run"]) - set(new["run"])),
            "only_new": sorted(set(new["run"]) - set(old["run"])),
            "runs_differing": len(differing), "differences": differing}


def _same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == b


def _plain(value):
    return None if pd.isna(value) else value.item() if hasattr(value, "item") else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--output", type=Path, help="write the summary as JSON here too")
    args = parser.parse_args(argv)
    # read every column as written: a float parsed twice the same way compares exactly
    summary = compare(pd.read_csv(args.old), pd.read_csv(args.new))
    text = json.dumps(summary, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(f"{summary['runs_in_both']} runs in both; {summary['runs_differing']} differ; "
          f"{len(summary['only_old'])} only in {args.old}; {len(summary['only_new'])} only in {args.new}")
    for run, changes in list(summary["differences"].items())[:20]:
        print(f"  {run}: {changes}")
    return 1 if summary["runs_differing"] or summary["only_old"] or summary["only_new"] else 0


if __name__ == "__main__":
    sys.exit(main())
