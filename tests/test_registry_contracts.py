"""Contracts over whole registries (methods: tests/methods/test_contracts.py): every registered dataset
loads its fixture; every metric spec is computed on a fixture and shown in a table and a plot.

A dataset or metric registered later is covered the moment it is registered: a dataset that reads
files is loaded from the miniature copy that ``write_fixture(root)`` of its own test module,
``tests/data/test_NAME.py``, writes (found by the dataset's name, as timm's tests iterate its
model registry); without one, it fails naming the dataset."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fairbench import registry
from fairbench.data.base import SPLITS, Task
from fairbench.metrics import evaluate_predictions
from fairbench.metrics.specs import MetricSpec, metric, metric_specs
from tests.kit import DatasetFixture

DATASETS = sorted(registry.datasets.names())
SMALL = {"n_train": 64, "n_val": 32, "n_test": 32}  # the built-in generated benchmarks


def dataset_fixture(name: str, root: Path) -> DatasetFixture:
    """Write the miniature copy of dataset ``name`` under ``root``, with the ``write_fixture`` of
    ``tests/data/test_NAME.py`` (``-`` in the name read as ``_``)."""
    module_name = f"tests.data.test_{name.replace('-', '_')}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        module = None
    write = getattr(module, "write_fixture", None)
    if write is None:
        pytest.fail(f"dataset {name!r} reads files but has no fixture: add write_fixture(root), which writes a "
                    f"miniature copy and returns a DatasetFixture, to tests/data/test_{name.replace('-', '_')}.py")
    return write(root)


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_loads_its_fixture(name, tmp_path):
    cls = registry.datasets.get(name)
    if cls.needs_root:
        root = tmp_path / "data"
        fixture = dataset_fixture(name, root)
        options, task = fixture.options, fixture.task
    else:
        root, task = None, None
        options = {k: v for k, v in SMALL.items() if k in cls.Options.model_fields}
    task = task or Task(cls.default_target, tuple(cls.default_protected))
    bundle = cls(root, cls.Options(**options), tmp_path / "cache").load(task, 32)
    assert set(bundle.splits) == set(SPLITS)
    assert bundle.classes and bundle.group_names
    for split in bundle.splits.values():
        n = len(split.targets)
        assert n > 0 and split.images.shape[0] == n and split.images.dtype == np.uint8
        assert split.targets.min() >= 0 and split.targets.max() < len(bundle.classes)
        assert list(split.attributes.columns) >= list(task.protected) or set(task.protected) <= set(split.attributes.columns)
        assert len(set(split.sample_ids)) == n  # ids tell samples apart (predictions are keyed by them)


def test_a_dataset_without_a_fixture_fails_naming_it(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="dataset 'no-such-set' reads files but has no fixture"):
        dataset_fixture("no-such-set", tmp_path)


@pytest.mark.parametrize("name", DATASETS)
def test_every_built_in_dataset_registers_through_its_entry_point(name):
    """Built-ins use the plugins' path (one entry-point line in pyproject.toml each): a built-in
    module found only by scanning the package would hide a missing line."""
    registry.datasets.get(name)
    entry = registry.datasets._entries[name]
    if entry.module.startswith("fairbench."):
        assert entry.distribution == "fairbench", (
            f"dataset {name!r} ({entry.module}) has no entry point: add {name} = \"{entry.module}\" under "
            '[project.entry-points."fairbench.datasets"] in pyproject.toml, then pip install -e .')


# -- metric specs ------------------------------------------------------------------------------

def _fixture_predictions(seed: int = 0):
    """Binary predictions of 3 groups with scores: every built-in metric is defined on them."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.array(["a", "b", "c"]), 40)
    y = rng.integers(0, 2, len(groups))
    p = np.where(rng.random(len(groups)) < 0.8, y, 1 - y)
    p1 = np.clip(np.where(p == 1, 0.7, 0.3) + rng.normal(0, 0.1, len(groups)), 0.01, 0.99)
    return y, p, groups, np.stack([1 - p1, p1], axis=1)


@pytest.mark.parametrize("name", sorted(metric_specs()))
def test_every_metric_spec_is_computed_and_described(name):
    spec = metric_specs()[name]
    y, p, g, s = _fixture_predictions()
    report = evaluate_predictions(y, p, g, scores=s)
    assert name in report and math.isfinite(report[name]), f"{name} is not computed by evaluate_predictions"
    if spec.compute is not None:  # its stand-alone function agrees with the report
        assert spec.value(y, p, g, s) == pytest.approx(report[name])
    assert spec.title and spec.better in ("higher", "lower") and spec.unit in ("%", "pp", "ratio")
    assert spec.title in spec.axis_label
    assert registry.summary_of(registry.metrics.get(name))


@pytest.fixture
def plugin_metric():
    """A metric declared the way a plugin declares it (one decorated function)."""

    @metric("test_gap_sq", title="Squared gap", unit="pp", better="lower", digits=1)
    def gap_sq(y_true, y_pred, groups):
        """Squared accuracy gap between the best and worst group (a test plugin)."""
        accs = [np.mean(np.asarray(y_true)[np.asarray(groups) == k] == np.asarray(y_pred)[np.asarray(groups) == k])
                for k in sorted(set(groups))]
        return float((max(accs) - min(accs)) * 100) ** 2 / 100

    yield gap_sq
    registry.metrics._entries.pop("test_gap_sq", None)


def test_a_plugin_metric_is_computed_stored_and_shown_like_a_built_in(plugin_metric, tmp_path, capsys):
    from fairbench.cli import main
    from fairbench.training.run import execute
    from tests.conftest import tiny_config

    y, p, g, _ = _fixture_predictions()
    assert evaluate_predictions(y, p, g)["test_gap_sq"] == pytest.approx(plugin_metric(y, p, g))
    spec = metric_specs()["test_gap_sq"]
    assert isinstance(spec, MetricSpec) and not spec.reported

    run = execute(tiny_config("erm", epochs=1), tmp_path / "runs")
    stored = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(stored["test"]["test_gap_sq"])  # written with the built-ins
    assert main(["compare", "--runs-dir", str(tmp_path / "runs")]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if "Worst grp" in line)
    assert "Squared gap" in header  # a column of the summary table
    assert main(["compare", "--runs-dir", str(tmp_path / "runs"), "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["test_gap_sq"] == pytest.approx(stored["test"]["test_gap_sq"])
    out = tmp_path / "pareto.png"
    assert main(["plot", "pareto", "--runs-dir", str(tmp_path / "runs"), "--x", "test_gap_sq", "--y", "accuracy",
                 "--output", str(out)]) == 0
    assert out.stat().st_size > 0


def test_a_metric_declaration_is_checked():
    with pytest.raises(ValueError, match="unit"):
        MetricSpec("x", "X", "percent", "higher", compute=len)
    with pytest.raises(ValueError, match="better"):
        MetricSpec("x", "X", "%", "up", compute=len)
    with pytest.raises(ValueError, match="needs"):
        MetricSpec("x", "X", "%", "higher", needs=("y_true", "weights"), compute=len)
    with pytest.raises(ValueError, match="function"):
        MetricSpec("x", "X", "%", "higher")


# -- layouts -----------------------------------------------------------------------------------------

GOLDEN_RUNS = Path(__file__).resolve().parent / "golden" / "golden_runs"


@pytest.mark.parametrize("fmt", ["table", "markdown", "latex", "csv", "json"])
@pytest.mark.parametrize("name", sorted(registry.layouts.names()))
def test_every_layout_renders_every_format(name, fmt):
    from fairbench.results.reporting import compare

    text, _ = compare(GOLDEN_RUNS, layouts=[name], fmt=fmt)
    assert text.strip()
    if fmt == "json":
        json.loads(text)


def test_a_plugin_layout_is_one_registered_class(tmp_path, capsys):
    """Registered, it is listed, accepted by compare and by a suite's [report] layouts."""
    from fairbench.cli import main
    from fairbench.results.layouts.base import Layout
    from fairbench.registry import register_layout
    from fairbench.suites.suite import Suite

    @register_layout("run-count")
    class RunCount(Layout):
        summary = "how many finished runs each method has (a test plugin)"

        def text(self, done, skipped, fmt, options):
            counts = {}
            for r in done:
                counts[r.method] = counts.get(r.method, 0) + 1
            return "".join(f"{m}: {n}\n" for m, n in sorted(counts.items()))

    try:
        assert main(["list", "layouts"]) == 0 and "run-count" in capsys.readouterr().out
        assert main(["compare", "--runs-dir", str(GOLDEN_RUNS), "--layout", "run-count"]) == 0
        from fairbench.runs.catalog import finished, load_records

        expected = sum(r.method == "fineface" for r in finished(load_records(GOLDEN_RUNS)[0])[0])
        assert expected > 0 and f"fineface: {expected}\n" in capsys.readouterr().out
        file = tmp_path / "s.toml"
        file.write_text('[suite]\nname = "s"\nseeds = [0]\n[report]\nlayouts = ["run-count", "summary"]\n')
        assert Suite.load(file).report.layouts == ["run-count", "summary"]
    finally:
        registry.layouts._entries.pop("run-count", None)
    assert main(["compare", "--runs-dir", str(GOLDEN_RUNS), "--layout", "run-count"]) == 2
    assert "unknown layout 'run-count'" in capsys.readouterr().err


def test_datasets_declare_their_target_concepts():
    """Cross-dataset evaluation maps a target through the concepts each dataset class declares,
    so a plugin dataset joins it by declaring its own."""
    from fairbench.data import vocab

    fairface, celeba = registry.datasets.get("fairface"), registry.datasets.get("celeba")
    assert vocab.mapped_target(fairface.target_concepts, "gender", celeba.target_concepts, ["Smiling", "Male"]) == "Male"
    assert vocab.mapped_target(celeba.target_concepts, "Male", fairface.target_concepts, ["gender", "race"]) == "gender"
    plugin = {"gender": "sex"}  # a plugin dataset's declaration
    assert vocab.mapped_target(plugin, "sex", fairface.target_concepts, ["gender"]) == "gender"
    assert vocab.mapped_target(fairface.target_concepts, "gender", plugin, ["sex", "age"]) == "sex"
    assert vocab.mapped_target(plugin, "age", fairface.target_concepts, ["gender"]) is None
