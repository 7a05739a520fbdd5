"""``fairbench eval``: a FairFace-trained run evaluated on other datasets, with their own groups."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairbench.cli import main
from fairbench.cross_eval import evaluate_run, target_for
from fairbench.datasets import vocab
from fairbench.datasets.base import DatasetError, Task
from fairbench.datasets.celeba import CelebA
from fairbench.datasets.lfwa import LFWA
from fairbench.datasets.manifest import Manifest
from fairbench.datasets.utkface import UTKFace
from fairbench.pipeline import center_crop_view
from fairbench.runner import load_trained_method, predict_images

from .fixtures_datasets import write_celeba, write_fairface, write_manifest, write_utkface


@pytest.fixture(scope="module")
def fairface_run(tmp_path_factory):
    """A finished tiny FairFace gender run (fixture copy of FairFace, CPU, 32 px, 1 epoch)."""
    from fairbench.config import build_config, resolve
    from fairbench.runner import execute

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
