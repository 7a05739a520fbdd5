"""The headline table of a protocol suite's results, in markdown, from its ``protocol.json``
(``fairbench compare --suite FILE --layout protocol --format json``): one row per method of the
table of one selection rule, with the columns a README quotes (accuracy, worst group, the paired
worst-group difference to ERM, whether it beats ERM after Holm, DoB and its floor, compute).
Every number is the compare output's own text, so the README's table is the records' table.

Run: python benchmarks/headline_table.py protocol.json [--rule accuracy] [--dataset NAME]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

COLUMNS = ("method (needs)", "accuracy %", "worst group %", "worst group - ERM, pp (paired)", "beats ERM (Holm)",
           "DoB pp (floor)", "training FLOPs", "kept epoch")


def row_name(row: dict, repeated: bool, datasets: bool) -> str:
    name = f"{row['method']} ({row['needs']})"
    if datasets:
        name += f" on {row['dataset']}"
    return f"{name}, {row['train_flops']}" if repeated else name


def headline(tables: list[dict], rule: str, dataset: str | None = None) -> str:
    table = next((t for t in tables if t["rule"] == rule), None)
    if table is None:
        raise SystemExit(f"no table for rule {rule!r}; rules: {', '.join(t['rule'] for t in tables)}")
    rows = [r for r in table["rows"] if dataset is None or r["dataset"] == dataset]
    if not rows:
        raise SystemExit(f"the {rule!r} table has no row on dataset {dataset!r}")
    counts = Counter((r["method"], r["dataset"]) for r in rows)
    datasets = len({r["dataset"] for r in rows}) > 1
    lines = [f"Test split; trial and epoch {table['title']}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        beats = r["beats_erm"] or ("(baseline)" if r.get("baseline") else "")
        cells = (row_name(r, counts[r["method"], r["dataset"]] > 1, datasets), r["accuracy"], r["worst_group_accuracy"],
                 r["worst_vs_erm"], beats, f"{r['dob']} ({r['dob_floor']})", r["train_flops"], r["epoch"])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", type=Path, help="protocol.json")
    parser.add_argument("--rule", default="accuracy", help="the selection rule's table (default: accuracy)")
    parser.add_argument("--dataset", help="only rows evaluated on this dataset")
    args = parser.parse_args()
    print(headline(json.loads(args.protocol.read_text()), args.rule, args.dataset))


if __name__ == "__main__":
    main()
