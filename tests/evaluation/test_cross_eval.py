"""``fairbench eval``: a FairFace-trained run evaluated on other datasets, with their own groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.cli import main
from fairbench.data import vocab
from fairbench.data.base import DatasetError, Task
from fairbench.data.celeba import CelebA
from fairbench.data.lfwa import LFWA
from fairbench.data.manifest import Manifest
from fairbench.data.utkface import UTKFace
from fairbench.evaluation.cross_eval import evaluate_run, target_for
from fairbench.evaluation.predict import predict_images
from fairbench.evaluation.trained_model import load_trained_method
from fairbench.pipeline import center_crop_view

from tests.data.test_celeba import write_celeba
from tests.data.test_fairface import write_fairface
from tests.data.test_manifest import write_manifest
from tests.data.test_utkface import write_utkface


@pytest.fixture(scope="module")
def fairface_run(tmp_path_factory):
    """A finished tiny FairFace gender run (fixture copy of FairFace, CPU, 32 px, 1 epoch)."""
    from fairbench.config import build_config, resolve
    from fairbench.training.run import execute

    tmp = tmp_path_factory.mktemp("ffrun")
    write_fairface(tmp / "fairface", train_per_group=2, val_per_group=1)
    cfg = resolve(build_config(None, {
        "method": "erm", "data.name": "fairface", "data.root": str(tmp / "fairface"),
        "data.cache_dir": str(tmp / "cache"), "data.image_size": 32, "train.epochs": 1, "train.batch_size": 8,
        "train.device": "cpu", "train.workers": 0, "backbone.name": "resnet_tiny", "backbone.pretrained": False,
    }))
    return execute(cfg, tmp / "runs")


def test_eval_on_utkface_writes_the_per_group_table(fairface_run, tmp_path, capsys):
    write_utkface(tmp_path / "utk")
    code = main(["eval", str(fairface_run), "--dataset", "utkface", "--data-root", str(tmp_path / "utk"),
                 "--device", "cpu", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.options.split_seed=1"])
    out = capsys.readouterr().out
    assert code == 0
    for group in ("White|Male", "Black|Female", "Others|Male", "overall (pooled)"):
        assert group in out
    folder = fairface_run / "evaluations" / "utkface-test"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"dataset", "split", "report", "run_id"} <= set(metrics)
    assert (metrics["dataset"], metrics["split"], metrics["run_id"]) == ("utkface", "test", fairface_run.name)
    assert metrics["options"]["split_seed"] == 1 and metrics["data_info"]["malformed_names"]["count"] == 5
    assert list(metrics["report"]["group_accuracy"]) == [
        f"{r}|{g}" for r in ("White", "Black", "Indian", "Asian", "Others") for g in ("Male", "Female")]
    predictions = pd.read_csv(folder / "predictions.csv")
    assert len(predictions) == metrics["report"]["n"] == 10
    assert set(predictions["group"]) == set(metrics["report"]["group_accuracy"])
    assert not list(folder.glob(".*.tmp"))
    # compare lists the evaluation as its own row
    assert main(["compare", "--runs-dir", str(fairface_run.parent), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert set(table["eval"]) == {"fairface", "utkface"}


def test_eval_on_celeba_maps_male_onto_gender(fairface_run, tmp_path):
    write_celeba(tmp_path / "celeba")
    ev = evaluate_run(fairface_run, "celeba", data_root=tmp_path / "celeba", cache_dir=tmp_path / "c", device="cpu")
    assert ev.metrics["target"] == "Male" and ev.metrics["classes"] == ["Female", "Male"]
    assert list(ev.metrics["report"]["group_accuracy"]) == ["Male", "Female"]
    assert ev.metrics["logit_columns"] == [0, 1]
    assert len(ev.predictions) == 4  # CelebA's official test partition of the fixture


def test_logits_are_reordered_when_class_names_differ_in_order(fairface_run, tmp_path):
    """A manifest whose gender classes sort as [man, woman] = [Male, Female], the run's reversed."""
    write_manifest(tmp_path / "m", gender_values=("man", "woman"))
    ev = evaluate_run(fairface_run, "manifest", data_root=tmp_path / "m", cache_dir=tmp_path / "c",
                      protected=("race",), device="cpu")
    assert ev.metrics["classes"] == ["man", "woman"] and ev.metrics["run_classes"] == ["Female", "Male"]
    assert ev.metrics["logit_columns"] == [1, 0]
    # the same images through the run's own class order: the predicted names agree
    method, _ = load_trained_method(fairface_run, "cpu")
    # the run's evaluation transform: the paper profile decodes at 33 px (32 * 460 / 448), centre crop 32
    split = Manifest(tmp_path / "m", cache_dir=tmp_path / "c").load(Task("gender", ("race",)), 33).splits["test"]
    raw = predict_images(method, center_crop_view(split.images, 32), 8, next(method.parameters()).device, False)
    run_names = [["Female", "Male"][k] for k in raw.argmax(1)]
    eval_names = [vocab.canonical_class(["man", "woman"][k]) for k in ev.predictions["pred"]]
    assert run_names == eval_names
    scores = ev.predictions[["score_0", "score_1"]].to_numpy()
    np.testing.assert_allclose(scores[:, 0], np.exp(raw[:, 1]) / np.exp(raw).sum(1), rtol=1e-5)


def test_targets_that_do_not_map_are_a_clear_error(tmp_path):
    celeba = CelebA(None)
    assert target_for("fairface", "gender", "celeba", celeba) == "Male"
    assert target_for("celeba", "Male", "utkface", UTKFace(None)) == "gender"
    assert target_for("celeba", "Smiling", "lfwa", LFWA(None)) == "Smiling"
    with pytest.raises(DatasetError, match="'race' \\(fairface\\) has no counterpart in celeba.*gender -> Male"):
        target_for("fairface", "race", "celeba", celeba)


def test_class_mapping():
    assert vocab.class_mapping(["Female", "Male"], ["Male", "Female"]) == [1, 0]
    assert vocab.class_mapping(["no", "yes"], ["-1", "1"]) == [0, 1]
    assert vocab.class_mapping(["Female", "Male"], ["no", "yes"]) is None
    assert vocab.class_mapping(["White", "Black"], ["White", "Black", "Asian"]) is None


def test_unfinished_run_and_bad_options(fairface_run, tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    assert main(["eval", str(tmp_path / "notarun"), "--dataset", "utkface"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["eval", str(fairface_run), "--dataset", "utkface", "--set", "train.lr=1"]) == 2
    assert "data.options.NAME=VALUE" in capsys.readouterr().err
    assert main(["eval", str(fairface_run), "--dataset", "utkface", "--data-root", str(tmp_path),
                 "--set", "data.options.colour=red"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


def _eval_manifest(run, root, cache, capsys):
    code = main(["eval", str(run), "--dataset", "manifest", "--data-root", str(root), "--protected", "race",
                 "--device", "cpu", "--set", f"data.cache_dir={cache}"])
    return code, capsys.readouterr()


def test_an_evaluation_of_other_data_is_kept_beside_the_earlier_one(fairface_run, tmp_path, capsys):
    """Two copies of a dataset that differ by one label: the second evaluation does not replace the
    first; each records its data's fingerprint, and compare shows the evaluated data's."""
    import shutil

    from fairbench.data.manifest import Manifest

    first, second = tmp_path / "m1", tmp_path / "m2"
    write_manifest(first, gender_values=("man", "woman"))
    shutil.copytree(first, second)
    table = pd.read_csv(second / "manifest.csv")
    row = table.index[table["split"] == "test"][0]
    table.loc[row, "gender"] = {"man": "woman", "woman": "man"}[table.loc[row, "gender"]]  # one label differs
    table.to_csv(second / "manifest.csv", index=False)
    task = Task("gender", ("race",))
    digests = [Manifest(root).fingerprint(task)["digest"] for root in (first, second)]
    assert digests[0] != digests[1]

    assert _eval_manifest(fairface_run, first, tmp_path / "c", capsys)[0] == 0
    base = fairface_run / "evaluations" / "manifest-test"
    earlier = (base / "metrics.json").read_text()
    assert json.loads(earlier)["data_fingerprint"]["digest"] == digests[0]
    code, out = _eval_manifest(fairface_run, second, tmp_path / "c", capsys)
    assert code == 0
    beside = base.with_name(f"manifest-test-{digests[1][:8]}")
    assert (base / "metrics.json").read_text() == earlier  # the first evaluation is untouched
    assert json.loads((beside / "metrics.json").read_text())["data_fingerprint"]["digest"] == digests[1]
    assert f"note: {base} holds an evaluation of other manifest data (fingerprint {digests[0]}" in out.out
    assert f"wrote {beside}" in out.out
    # the same data again: written to its own folder again, nothing new beside it
    assert _eval_manifest(fairface_run, first, tmp_path / "c", capsys)[0] == 0
    assert sorted(p.name for p in (fairface_run / "evaluations").glob("manifest-test*")) == [base.name, beside.name]
    assert json.loads((base / "metrics.json").read_text())["report"] == json.loads(earlier)["report"]

    assert main(["compare", "--runs-dir", str(fairface_run.parent), "--format", "csv"]) == 0
    rows = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert set(rows.loc[rows["eval"] == "manifest", "data"]) == set(digests)  # the evaluated data's, not the run's
    run_data = json.loads((fairface_run / "config.json").read_text())["data"]["fingerprint"]
    assert list(rows.loc[rows["eval"] == "fairface", "data"]) == [run_data]
    shutil.rmtree(beside)
    shutil.rmtree(base)


def test_an_evaluation_that_recorded_no_fingerprint_is_not_replaced(fairface_run, tmp_path, capsys):
    """An evaluation made before fingerprints were recorded cannot be told the same data: kept."""
    import shutil

    write_manifest(tmp_path / "m", gender_values=("man", "woman"))
    base = fairface_run / "evaluations" / "manifest-test"
    base.mkdir(parents=True)
    (base / "metrics.json").write_text(json.dumps({"dataset": "manifest", "split": "test", "report": {}}))
    try:
        code, out = _eval_manifest(fairface_run, tmp_path / "m", tmp_path / "c", capsys)
        assert code == 0
        assert json.loads((base / "metrics.json").read_text())["report"] == {}
        assert "(fingerprint not recorded;" in out.out
        assert len(list((fairface_run / "evaluations").glob("manifest-test-*"))) == 1
    finally:
        for folder in (fairface_run / "evaluations").glob("manifest-test*"):
            shutil.rmtree(folder)


def test_eval_of_a_read_only_run_folder_names_it_and_says_what_eval_can_do(fairface_run, tmp_path, capsys,
                                                                           monkeypatch):
    """Not "choose a writable --runs-dir" (eval has no such option): the run folder, and a copy of it."""
    import errno
    import shutil
    import tempfile

    run = tmp_path / "ro" / fairface_run.name
    shutil.copytree(fairface_run, run)
    write_manifest(tmp_path / "m", gender_values=("man", "woman"))
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # a read-only mount, also for root (who may write anywhere)
        if dir is not None and Path(dir).is_relative_to(run):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    before = sorted(run.rglob("*"))
    code, out = _eval_manifest(run, tmp_path / "m", tmp_path / "c", capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {run}" in lines[0] and "the file system is read-only" in lines[0], lines
    assert "--runs-dir" not in lines[0] and f"cp -r {run} DIR; fairbench eval DIR/{run.name}" in lines[0]
    assert sorted(run.rglob("*")) == before  # said before anything was written


# -- real faces: a UTKFace-trained run evaluated on every image of the FairFace sample ----------------

SHARED_DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
UTKFACE_PART1, FAIRFACE_SAMPLE = SHARED_DATA / "utkface-part1", SHARED_DATA / "fairface-sample"
needs_shared = pytest.mark.skipif(
    not ((UTKFACE_PART1 / "UTKFace").is_dir() and (FAIRFACE_SAMPLE / "fairface_label_train.csv").is_file()),
    reason="needs ../shared/data/utkface-part1 and ../shared/data/fairface-sample")


@needs_shared
def test_utkface_run_evaluated_on_all_of_the_fairface_sample(tmp_path, capsys):
    """Train ERM on a few hundred real UTKFace faces (32 px, 1 epoch), then ``eval --split all``
    on FairFace: every one of the sample's images, in its 14 race x gender groups."""
    code = main(["run", "erm", "--dataset", "utkface", "--data-root", str(UTKFACE_PART1), "--image-size", "32",
                 "--epochs", "1", "--max-train-samples", "300", "--max-eval-samples", "300", "--backbone", "resnet_tiny",
                 "--set", "backbone.pretrained=false", "--threads", "1", "--device", "cpu", "--quiet",
                 "--runs-dir", str(tmp_path / "runs"), "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    # the real folder's 2 malformed names: skipped, said in one line
    notices = [line for line in out.err.splitlines() if "warning: utkface: skipped" in line]
    assert notices and notices[0].startswith("fairbench run: warning: utkface: skipped 2 file(s)")
    run = Path(out.out.strip().splitlines()[-1].removeprefix("run folder: "))

    code = main(["eval", str(run), "--dataset", "fairface", "--data-root", str(FAIRFACE_SAMPLE), "--split", "all",
                 "--device", "cpu", "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    listed = pd.concat([pd.read_csv(FAIRFACE_SAMPLE / f"fairface_label_{s}.csv") for s in ("train", "val")])
    supports = (listed["race"] + "|" + listed["gender"]).value_counts().to_dict()
    assert len(listed) == 112 and len(supports) == 14
    folder = run / "evaluations" / "fairface-all"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (metrics["split"], metrics["report"]["n"]) == ("all", len(listed))
    assert metrics["group_counts"] == supports
    predictions = pd.read_csv(folder / "predictions.csv")
    assert sorted(predictions["sample_id"]) == sorted(listed["file"])  # every image, once
    assert predictions["split"].value_counts().to_dict() == {"train": 70, "test": 28, "val": 14}
    assert list(predictions["index"]) == list(range(112))
    rows = {cells[1].strip(): cells[2].strip() for line in out.out.splitlines()
            if len(cells := line.split("│")) > 3}  # the table's group and n columns
    assert {g: rows.get(g) for g in supports} == {g: str(n) for g, n in supports.items()}  # each group's support
    assert rows["overall (pooled)"] == "112"


def test_a_suite_may_evaluate_every_image_and_unknown_splits_are_refused(tmp_path):
    from fairbench.config import ConfigError
    from fairbench.suites.suite import Suite

    suite = tmp_path / "s.toml"
    suite.write_text('[suite]\nname = "s"\nseeds = [0]\n[base]\nmethod = "erm"\n'
                     '[[evaluate]]\ndataset = "fairface"\nsplit = "all"\n')
    spec = Suite.load(suite).evaluations[0]
    assert (spec.split, spec.folder) == ("all", "fairface-all")  # where evaluate_run writes it
    suite.write_text(suite.read_text().replace('"all"', '"everything"'))
    with pytest.raises(ConfigError, match="unknown split 'everything'; valid: train, val, test, all"):
        Suite.load(suite)


def test_the_constant_control_can_be_evaluated_on_another_dataset(tmp_path, capsys):
    """The constant predictor has no parameters (only a buffer): eval must not look for one."""
    from fairbench.config import build_config, resolve
    from fairbench.training.run import execute

    write_fairface(tmp_path / "fairface", train_per_group=2, val_per_group=1)
    write_utkface(tmp_path / "utk")
    cfg = resolve(build_config(None, {
        "method": "constant", "data.name": "fairface", "data.root": str(tmp_path / "fairface"),
        "data.cache_dir": str(tmp_path / "cache"), "data.image_size": 32, "train.epochs": 1, "train.batch_size": 8,
        "train.device": "cpu", "train.workers": 0, "backbone.name": "resnet_tiny", "backbone.pretrained": False,
    }))
    run = execute(cfg, tmp_path / "runs")
    code = main(["eval", str(run), "--dataset", "utkface", "--data-root", str(tmp_path / "utk"),
                 "--device", "cpu", "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    assert code == 0, capsys.readouterr().err
    predictions = pd.read_csv(run / "evaluations" / "utkface-test" / "predictions.csv")
    assert predictions["pred"].nunique() == 1  # one class for every face, as trained
