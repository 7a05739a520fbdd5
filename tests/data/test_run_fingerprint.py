"""Results are never lost or mixed up: the data is part of a run's identity, ``--force`` keeps the
finished run until its replacement is done, errors before training leave nothing behind, Ctrl-C
is resumable, the thread count is chosen and recorded, a useless model is flagged."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fairbench.cli import main
from fairbench.compute import default_threads
from fairbench.methods.erm import ERM
from fairbench.runs.catalog import iter_runs
from fairbench.runs.lifecycle import RunAlreadyDone
from fairbench.runs.record import RunRecord
from fairbench.training.run import execute
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _example():
    spec = importlib.util.spec_from_file_location("make_face_folder", ROOT / "examples" / "make_face_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def faces(folder: Path) -> Path:
    """A small face folder made by the README's example script."""
    _example().make_face_folder(folder, n_train=64, n_val=32, n_test=32, size=40)
    return folder


def run_args(data: Path, runs: Path, *extra: str) -> list[str]:
    """The README's real-data example command, at test size."""
    return ["run", "erm", "--dataset", "manifest", "--data-root", str(data), "--target", "smiling",
            "--protected", "skin_tone,presentation", "--backbone", "resnet_tiny", "--set", "backbone.pretrained=false",
            "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet",
            "--set", "train.workers=0", "--set", f"data.cache_dir={runs.parent / 'cache'}", "--runs-dir", str(runs),
            *extra]


def folders(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.iterdir() if p.name != ".leases")


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the data's fingerprint ------------------------------------------------------------------------

def test_readme_example_runs_and_a_moved_copy_keeps_its_id(tmp_path, capsys):
    data, runs = faces(tmp_path / "faces"), tmp_path / "runs"
    assert main(run_args(data, runs)) == 0
    (rid,) = folders(runs)
    config = json.loads((runs / rid / "config.json").read_text())
    recorded = json.loads((runs / rid / "dataset.json").read_text())["fingerprint"]
    assert config["data"]["fingerprint"] == recorded["digest"] and recorded["images"] == 128
    # the same files somewhere else: the same run
    moved = tmp_path / "elsewhere" / "faces"
    shutil.move(str(data), moved)
    capsys.readouterr()
    assert main(run_args(moved, runs)) == 0
    assert "already done: " + str(runs / rid) in capsys.readouterr().err
    assert folders(runs) == [rid]


@pytest.mark.parametrize("change", ["label", "image", "split", "extra row"])
def test_other_data_is_another_run(tmp_path, change):
    """Same flags, different data: not "already done", and compare keeps the two apart."""
    from fairbench.results.reporting import compare

    data, runs = faces(tmp_path / "a"), tmp_path / "runs"
    assert main(run_args(data, runs)) == 0
    other = tmp_path / "b"
    shutil.copytree(data, other)
    frame = pd.read_csv(other / "manifest.csv", dtype=str)
    if change == "label":
        frame.loc[0, "smiling"] = "no" if frame.loc[0, "smiling"] == "yes" else "yes"
    elif change == "image":  # re-encoded: another size on disk
        from PIL import Image

        path = other / frame.loc[3, "path"]
        Image.open(path).save(path, "JPEG", quality=40)
    elif change == "split":
        frame.loc[frame.index[frame["split"] == "train"][0], "split"] = "test"
    else:
        shutil.copy(other / frame.loc[1, "path"], other / "images" / "train" / "extra.jpg")
        frame = pd.concat([frame, frame.iloc[[1]].assign(path="images/train/extra.jpg")], ignore_index=True)
    frame.to_csv(other / "manifest.csv", index=False)
    assert main(run_args(other, runs, "--seed", "1")) == 0
    assert main(run_args(data, runs, "--seed", "1")) == 0
    assert len(folders(runs)) == 3
    text, skipped = compare(runs)
    assert not skipped
    lines = [line for line in text.splitlines() if line.startswith("erm")]
    # two settings (one per copy of the data), never "seeds 3"; the data column tells them apart
    assert len(lines) == 2 and "data" in text.splitlines()[0]
    fingerprints = {json.loads((runs / f / "config.json").read_text())["data"]["fingerprint"] for f in folders(runs)}
    assert len(fingerprints) == 2 and all(any(fp in line for line in lines) for fp in fingerprints)


def test_synthface_fingerprint_follows_the_generator(monkeypatch):
    """No files: the fingerprint hashes the generator's output, so changing the renderer changes the ids."""
    import fairbench.data.synthface as synthface
    from fairbench.data.run_fingerprint import data_fingerprint

    cfg = tiny_config("erm")
    first = data_fingerprint(cfg)["digest"]
    assert data_fingerprint(cfg)["digest"] == first
    assert data_fingerprint(tiny_config("erm", sets=["data.options.seed=3"]))["digest"] != first
    original = synthface.render
    monkeypatch.setattr(synthface, "render", lambda *a, **k: original(*a, **k) // 2)
    assert data_fingerprint(cfg)["digest"] != first


def test_a_loader_that_decodes_itself_is_fingerprinted_by_content():
    """Datasets that do not use the shared label-table path are hashed from their decoded content."""
    import numpy as np

    from fairbench.data.base import DataSplit, Dataset, DatasetBundle, Task

    class Tiny(Dataset):
        pixels = 0

        def load(self, task, image_size, splits=("train", "val", "test")):
            out = {}
            for name in splits:
                images = np.full((4, image_size, image_size, 3), self.pixels, dtype=np.uint8)
                attrs = pd.DataFrame({"g": ["a", "b", "a", "b"]})
                out[name] = DataSplit(name, images, np.array([0, 1, 0, 1]), attrs, np.array(list("wxyz"), dtype=object))
            return DatasetBundle("tiny", task, ["n", "y"], out)

    task = Task("t", ("g",))
    a = Tiny(None).fingerprint(task)
    assert Tiny(None).fingerprint(task) == a and a["how"] == "decoded content at 32 px"
    Tiny.pixels = 7
    assert Tiny(None).fingerprint(task)["digest"] != a["digest"]


# -- the run seed draws the built-in benchmark's data ------------------------------------------------

#: data.fingerprint of tiny_config("erm") (seed 0) and of its spurious scenario, recorded before the
#: run seed drew the data: seed 0's data, and so its run ids, must stay what they were
SEED_0_FINGERPRINTS = {"synthface": "f99225d7d349042a", "synthface-spurious": "e5ec23dc0ea85363"}


def _train_images(cfg):
    from fairbench.data.base import Task
    from fairbench.data.run_fingerprint import open_dataset

    return open_dataset(cfg).load(Task(cfg.data.target, tuple(cfg.data.protected)), 32, ("train",)).splits["train"].images


@pytest.mark.parametrize("name", sorted(SEED_0_FINGERPRINTS))
def test_the_run_seed_draws_the_data_unless_the_data_seed_is_set(name):
    from fairbench.config import run_id
    from fairbench.data.run_fingerprint import with_fingerprint

    def cfg(*sets):
        return with_fingerprint(tiny_config("erm", sets=[f"data.name={name}", *sets]))

    seed0, seed1, fixed = cfg(), cfg("train.seed=1"), cfg("train.seed=1", "data.options.seed=0")
    assert seed0.data.fingerprint == SEED_0_FINGERPRINTS[name]
    assert run_id(seed0) == run_id(cfg("data.options.seed=0"))  # seed 0: the run it always was
    assert (seed0.data.options["seed"], seed1.data.options["seed"], fixed.data.options["seed"]) == (0, 1, 0)
    assert fixed.data.fingerprint == seed0.data.fingerprint != seed1.data.fingerprint
    images0 = _train_images(seed0)
    assert not np.array_equal(images0, _train_images(seed1))
    assert np.array_equal(images0, _train_images(fixed))


def test_data_read_from_files_has_no_data_seed_and_keeps_its_options():
    from fairbench.config import build_config, resolve

    cfg = resolve(build_config(None, {"method": "erm", "data.name": "manifest", "train.seed": 3}))
    assert "seed" not in cfg.data.options


def test_seeds_of_redrawn_data_are_one_setting_and_record_their_data_seed(tmp_path):
    from fairbench.results.reporting import compare
    from fairbench.runs.catalog import load_records

    runs = tmp_path / "runs"
    for seed in (0, 1):
        execute(tiny_config("erm", sets=[f"train.seed={seed}"]), runs)
    records, problems = load_records(runs)
    assert not problems and len(records) == 2
    assert {json.loads((r.path / "dataset.json").read_text())["data_seed"] for r in records} == {0, 1}
    assert len({r.setting_key for r in records}) == 1 and {r.data_fingerprint for r in records} == {None}
    text, _ = compare(runs)
    assert [line.split()[0] for line in text.splitlines() if line.startswith("erm")] == ["erm"]  # one row, 2 seeds

# -- --force and errors before training --------------------------------------------------------------

def test_force_keeps_the_finished_run_until_the_replacement_is_done(tmp_path, monkeypatch):
    cfg = tiny_config("erm")
    path = execute(cfg, tmp_path)
    before = hashes(path)
    # a forced re-run that fails in training: the finished run is untouched, nothing is left aside
    original = ERM.update

    def boom(self, batch):
        raise RuntimeError("exploded on purpose")

    monkeypatch.setattr(ERM, "update", boom)
    with pytest.raises(RuntimeError, match="exploded on purpose"):
        execute(cfg, tmp_path, force=True)
    assert hashes(path) == before and folders(tmp_path) == [path.name]
    # a forced re-run that succeeds replaces it whole (and clears what a killed --force left aside)
    monkeypatch.setattr(ERM, "update", original)
    (tmp_path / f".{path.name}.force-999999").mkdir()
    assert execute(cfg, tmp_path, force=True) == path
    assert folders(tmp_path) == [path.name] and [r.path for r in iter_runs(tmp_path)] == [path]
    assert RunRecord(path).status["state"] == "done"
    after = hashes(path)
    assert after.keys() == before.keys() and after["environment.json"] != before["environment.json"]  # a new run


def test_force_with_broken_data_fails_before_touching_the_run(tmp_path):
    """The issue's scenario: --force against a broken label file must not delete the finished run."""
    data, runs = faces(tmp_path / "faces"), tmp_path / "runs"
    assert main(run_args(data, runs)) == 0
    (rid,) = folders(runs)
    before = hashes(runs / rid)
    text = (data / "manifest.csv").read_text()
    (data / "manifest.csv").write_text(text.replace("path,split", "file,split", 1))
    assert main(run_args(data, runs, "--force")) == 2
    assert folders(runs) == [rid] and hashes(runs / rid) == before


def test_errors_before_training_leave_no_run_folder(tmp_path):
    runs = tmp_path / "runs"
    missing = tmp_path / "no-such-folder"
    assert main(run_args(missing, runs)) == 2
    data = faces(tmp_path / "faces")
    (data / "images" / "val" / "00003.jpg").write_bytes(b"")  # the decoder's error, after the fingerprint
    assert main(run_args(data, runs)) == 2
    assert main(run_args(faces(tmp_path / "faces2"), runs, "--set", f"backbone.pretrained={tmp_path / 'none.pt'}")) == 2
    assert not runs.exists() or folders(runs) == []


# -- Ctrl-C and the epoch numbers in messages ----------------------------------------------------------

def test_ctrl_c_leaves_a_resumable_incomplete_run(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = ERM.update

    def interrupt_in_epoch_2(self, batch):
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # 256 / 32 = 8 batches per epoch: the third batch of epoch 2
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(ERM, "update", interrupt_in_epoch_2)
    cfg = tiny_config("erm", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, tmp_path)
    (name,) = folders(tmp_path)
    status = RunRecord(tmp_path / name).status
    assert status["state"] == "incomplete"
    assert status["reason"] == "interrupted during epoch 2/3; run the same command again to resume"
    assert len(json.loads((tmp_path / name / "history.json").read_text())) == 1  # epoch 1 finished
    monkeypatch.setattr(ERM, "update", original)
    execute(cfg, tmp_path)
    history = json.loads((tmp_path / name / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2] and RunRecord(tmp_path / name).status["state"] == "done"


def test_a_dead_process_is_reported_with_the_logs_epoch_number(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "erm-synthface-0000000000"
    run.mkdir()
    # status.json counts epochs from 0; the log and every message count from 1
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": dead.pid, "host": socket.gethostname(),
                                                 "epoch": 4}))
    assert RunRecord(run).status["reason"] == f"process {dead.pid} died during epoch 5"


# -- threads -----------------------------------------------------------------------------------------

def test_default_threads_respects_the_environment_and_the_load(monkeypatch):
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert default_threads() == 4
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))  # one core busy elsewhere
    assert default_threads() == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))  # never below one
    assert default_threads() == 1


def test_threads_flag_is_applied_and_recorded(tmp_path):
    threads = torch.get_num_threads()
    try:
        data, runs = faces(tmp_path / "faces"), tmp_path / "runs"
        assert main(run_args(data, runs, "--threads", "2")) == 0
        (rid,) = folders(runs)
        assert json.loads((runs / rid / "config.json").read_text())["train"]["threads"] == 2
        assert json.loads((runs / rid / "environment.json").read_text())["torch_threads"] == 2
        # not part of the run id: the same run with another thread count is already done
        assert main(run_args(data, runs, "--threads", "1")) == 0 and folders(runs) == [rid]
    finally:
        torch.set_num_threads(threads)


# -- the end-of-run table flags a model without skill ---------------------------------------------------

def test_end_of_run_notes_flag_constant_and_chance_models(run_tiny, capsys):
    from fairbench.results.reporting import run_notes

    path = run_tiny("constant")
    notes = run_notes(RunRecord(path))
    assert any(n.startswith("the model predicts one class (") and "fairness gaps of 0 here mean no skill" in n
               for n in notes), notes
    frame = RunRecord(path).predictions("test")
    # one group predicted constantly while the others vary: named
    frame.loc[frame.index[:3], "pred"] = 1 - frame.loc[frame.index[:3], "pred"]
    frame.to_csv(path / "predictions_test.csv", index=False)
    groups = [g for g, p in frame.groupby("group")["pred"] if p.nunique() == 1]
    (note,) = [n for n in run_notes(RunRecord(path)) if "group(s)" in n]
    assert note.startswith(f"the model predicts one class for every test image of {len(groups)} group(s): ")
    assert all(g in note for g in groups)


def test_compare_names_a_damaged_record_and_shows_the_rest(tmp_path, capsys):
    a = execute(tiny_config("erm"), tmp_path)
    b = execute(tiny_config("erm", sets=["train.seed=1"]), tmp_path)
    (b / "metrics.json").write_text("{bad")
    for layout in ("summary", "groups"):
        capsys.readouterr()
        assert main(["compare", "--runs-dir", str(tmp_path), "--layout", layout]) == 0
        out, err = capsys.readouterr()
        assert f"skipped {b.name}: unreadable metrics.json: " in err and "run its command again with --force" in err
        assert "erm" in out and a.name not in err
