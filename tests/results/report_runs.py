"""One tiny protocol suite, trained once per test session, for the tests of ``fairbench report``
and ``fairbench export`` (tests/results/test_report_html.py, tests/results/test_export.py): ERM with two search
trials and the constant predictor, two seeds, one epoch on 128 images, ERM also evaluated on
another draw of the data (a cross-dataset evaluation)."""

from __future__ import annotations

from pathlib import Path

SUITE = """
[suite]
name = "report-test"
description = "ERM (two search trials) and the constant predictor, for the results page and the export."
seeds = [0, 1]

[base]
data.name = "synthface"
data.image_size = 32
data.options = {n_train = 128, n_val = 64, n_test = 64, seed = 0}
train.epochs = 1
train.batch_size = 32
train.device = "cpu"
train.workers = 0
selection = "last"

[grid]
method = ["erm", "constant"]

[search]
trials = 2
seed = 3
methods = ["erm"]

[[evaluate]]
dataset = "synthface"
options = {n_test = 64, seed = 7}
methods = ["erm"]

[report]
layouts = ["protocol", "summary"]
pareto = [{ x = "dob", y = "worst_group_accuracy", rule = "accuracy" }]
"""

#: flags every suite command of these tests passes: the developer's tree may have uncommitted changes
MIXED = "--allow-mixed-revisions"

_CACHE: dict[str, tuple[Path, Path]] = {}


def report_suite(tmp_path_factory) -> tuple[Path, Path]:
    """(the suite file, its runs folder) after ``fairbench suite run``, trained on the first call only."""
    if "suite" not in _CACHE:
        from fairbench.cli import main

        folder = tmp_path_factory.mktemp("report-suite")
        path, runs = folder / "suite.toml", folder / "runs"
        path.write_text(SUITE)
        code = main(["suite", "run", str(path), "--runs-dir", str(runs), "--quiet", "--threads", "1", MIXED])
        assert code == 0, f"the report suite did not run (exit {code})"
        _CACHE["suite"] = (path, runs)
    return _CACHE["suite"]
