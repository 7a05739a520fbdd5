"""Train stored runs of a suite again, at the current code, and compare their predictions byte for byte.

    python benchmarks/reproduce_runs.py benchmarks/quickstart.toml --runs-dir runs/protocol RUN_ID [RUN_ID ...]

For results trained across several commits (``environment.json`` records each run's
``git_revision``): a run trained at an older commit that gives identical validation and test
predictions now shows that the commits in between did not change what it computes. Same
machine, device and torch thread count needed (1 thread here, as the suite's workers used).
Exit status 1 if any run differs.
"""

from __future__ import annotations

import argparse
import filecmp
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("runs", nargs="+", metavar="RUN_ID")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from fairbench.suites.suite import Suite
    from fairbench.training.run import execute

    torch.set_num_threads(args.threads)
    jobs = {job.run_id: job for job in Suite.load(args.suite).resolve() if job.run_id}
    unknown = [rid for rid in args.runs if rid not in jobs]
    if unknown:
        parser.error(f"not a job of {args.suite}: {', '.join(unknown)}")
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rid in args.runs:
            again = execute(jobs[rid].config, Path(tmp))
            same = all(filecmp.cmp(again / name, args.runs_dir / rid / name, shallow=False)
                       for name in ("predictions_val.csv", "predictions_test.csv"))
            differ += not same
            print(f"{rid}: {'identical predictions' if same else 'DIFFERENT predictions'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
