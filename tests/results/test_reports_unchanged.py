"""Every report the CLI and suites write from the golden run records, byte for byte.

The reporting side (records, metric specs, layouts, renderers, suite reports, plots) may be
reorganised freely; what users read must not change. ``report_outputs`` regenerates every
report (``fairbench compare`` in every layout and format, with and without a suite, with the
paper / needs / by / dataset options; the suite reports; ``fairbench plot pareto``) from
tests/golden/golden_runs; the test holds each against tests/golden/golden_reports/.

After a deliberate change, regenerate with ``FAIRBENCH_REGEN_GOLDEN=1 .venv/bin/pytest
tests/results/test_reports_unchanged.py`` and read the diff before checking it in.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from fairbench.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN_RUNS = HERE.parent / "golden" / "golden_runs"
GOLDEN_REPORTS = HERE.parent / "golden" / "golden_reports"
REGEN = os.environ.get("FAIRBENCH_REGEN_GOLDEN") == "1"

LAYOUTS = ["summary", "groups", "methods", "attributes", "min-group"]
FORMATS = {"table": "txt", "markdown": "md", "latex": "tex", "csv": "csv", "json": "json"}
SUITES = {"gender": ROOT / "benchmarks" / "paper-gender.toml", "celeba": ROOT / "benchmarks" / "paper-celeba.toml"}


def _cli(argv: list[str]) -> bytes:
    """Exit code, standard output and standard error of one command, as one text."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return f"exit {code}\n-- stdout\n{out.getvalue()}-- stderr\n{err.getvalue()}".encode()


def compare_cases(runs: Path) -> dict[str, list[str]]:
    """name -> ``fairbench compare`` arguments."""
    base = ["compare", "--runs-dir", str(runs)]
    cases: dict[str, list[str]] = {}
    for layout in LAYOUTS:
        for fmt, ext in FORMATS.items():
            cases[f"compare-{layout}.{ext}"] = base + ["--layout", layout, "--format", fmt]
            for name, suite in SUITES.items():
                cases[f"compare-{name}-{layout}.{ext}"] = base + ["--layout", layout, "--format", fmt, "--suite", str(suite)]
    for name, suite in SUITES.items():  # the suite's own layouts, one after the other
        for fmt in ("table", "markdown", "latex"):
            cases[f"compare-{name}-default.{FORMATS[fmt]}"] = base + ["--suite", str(suite), "--format", fmt]
    for layout in ("groups", "methods", "attributes", "min-group"):
        cases[f"compare-{layout}-paper.txt"] = base + ["--layout", layout, "--paper"]
        cases[f"compare-{layout}-no-paper.txt"] = base + ["--layout", layout, "--no-paper"]
        cases[f"compare-{layout}-needs.md"] = base + ["--layout", layout, "--needs", "--format", "markdown"]
        cases[f"compare-{layout}-no-needs.md"] = base + ["--layout", layout, "--no-needs", "--format", "markdown"]
    cases["compare-methods-by-gender.txt"] = base + ["--layout", "methods", "--by", "gender"]
    cases["compare-methods-by-race.json"] = base + ["--layout", "methods", "--by", "race", "--format", "json"]
    for dataset in ("utkface", "fairface", "celeba"):
        cases[f"compare-groups-{dataset}.txt"] = base + ["--layout", "groups", "--dataset", dataset]
    cases["compare-summary-utkface.txt"] = base + ["--dataset", "utkface"]
    cases["compare-csv-two-layouts.txt"] = base + ["--suite", str(SUITES["gender"]), "--format", "csv"]
    return cases


PARETO = {  # name -> plot pareto arguments after --runs-dir and --output
    "pareto-dob-accuracy": ["--x", "dob", "--y", "accuracy"],
    "pareto-gender-by-race": ["--x", "dob", "--y", "accuracy", "--by", "race", "--suite", str(SUITES["gender"])],
    "pareto-celeba-deo": ["--x", "deo", "--y", "min_group_accuracy", "--suite", str(SUITES["celeba"])],
    "pareto-utkface-worst": ["--x", "max_min_ratio", "--y", "worst_group_accuracy", "--dataset", "utkface",
                             "--no-facet"],
    "pareto-paper": ["--x", "dob", "--y", "accuracy", "--paper", "--suite", str(SUITES["gender"])],
}


def report_outputs(runs: Path, work: Path) -> dict[str, bytes]:
    """Every report, by file name. ``work``: an empty folder for the written files."""
    from fairbench.suites.suite import Suite

    work.mkdir(parents=True)
    out = {name: _cli(argv) for name, argv in compare_cases(runs).items()}
    for name, argv in PARETO.items():
        image = work / f"{name}.png"
        out[f"{name}.log"] = _cli(["plot", "pareto", "--runs-dir", str(runs), "--output", str(image), *argv])
        if image.is_file():
            out[f"{name}.png"] = image.read_bytes()
    copy = work / "runs"  # suite reports are written next to the runs
    shutil.copytree(runs, copy)
    for name, path in SUITES.items():
        suite = Suite.load(path)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            _write_reports(suite, copy)
        folder = copy / f"suite-{suite.name}"
        for file in sorted(folder.iterdir()):
            out[f"suite-{name}-{file.name}"] = file.read_bytes()
        out[f"suite-{name}.log"] = err.getvalue().replace(str(copy), "RUNS").encode()
    return out


def _write_reports(suite, runs: Path) -> None:
    from fairbench.results.reporting import write_suite_report

    write_suite_report(suite, runs)


def _matplotlib_stamp() -> str:
    import matplotlib

    return matplotlib.__version__


def test_every_report_is_unchanged(tmp_path):
    """Text byte for byte; images by their SHA-256 (checked when matplotlib is the version that drew them)."""
    outputs = report_outputs(GOLDEN_RUNS, tmp_path / "work")
    subs = [(str(tmp_path).encode(), b"WORK"), (str(GOLDEN_RUNS).encode(), b"GOLDEN_RUNS"), (str(ROOT).encode(), b"ROOT")]
    for old, new in subs:
        outputs = {k: v.replace(old, new) for k, v in outputs.items()}
    images = {k: hashlib.sha256(v).hexdigest() for k, v in outputs.items() if k.endswith(".png")}
    texts = {k: v for k, v in outputs.items() if not k.endswith(".png")}
    index = GOLDEN_REPORTS / "images.json"
    if REGEN:
        shutil.rmtree(GOLDEN_REPORTS, ignore_errors=True)
        GOLDEN_REPORTS.mkdir(parents=True)
        for name, data in texts.items():
            (GOLDEN_REPORTS / name).write_bytes(data)
        index.write_text(json.dumps({"matplotlib": _matplotlib_stamp(), "sha256": images}, indent=1) + "\n")
        return
    expected = {p.name for p in GOLDEN_REPORTS.iterdir() if p != index}
    assert set(texts) == expected, f"reports added {sorted(set(texts) - expected)} / lost {sorted(expected - set(texts))}"
    differ = [name for name, data in sorted(texts.items()) if data != (GOLDEN_REPORTS / name).read_bytes()]
    assert not differ, f"reports that changed: {differ}"
    drawn = json.loads(index.read_text())
    assert set(images) == set(drawn["sha256"])
    if drawn["matplotlib"] == _matplotlib_stamp():
        assert {k for k in images if images[k] != drawn["sha256"][k]} == set()
    # the cases cover what they mean to: every layout in every format, and the images were drawn
    assert all(f"compare-{layout}.{ext}" in texts for layout in LAYOUTS for ext in FORMATS.values())
    assert len(images) >= len(PARETO) + 2
    assert json.loads(texts["compare-methods-by-race.json"].split(b"-- stdout\n")[1].split(b"-- stderr\n")[0])["tables"]
