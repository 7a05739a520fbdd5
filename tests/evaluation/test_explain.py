"""``fairbench explain``: the attention figure of a FineFACE run next to an ERM baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fairbench.cli import main
from fairbench.evaluation.explain import compute_maps, sample_split
from fairbench.evaluation.run_data import load_bundle
from fairbench.evaluation.trained_model import load_trained_method
from fairbench.training.run import execute
from tests.conftest import tiny_config

SMALL_DATA = {"data.options": {"n_train": 64, "n_val": 32, "n_test": 32}}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fineface = execute(tiny_config("fineface", hparams={"expert_width": 8, "expert_out": 16}, **SMALL_DATA), root)
    erm = execute(tiny_config("erm", **SMALL_DATA), root)
    return fineface, erm


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        return im.size


def test_explain_fineface_with_erm_baseline(runs, tmp_path, capsys):
    fineface, erm = runs
    out = tmp_path / "figure.png"
    assert main(["explain", str(fineface), "--baseline", str(erm), "--images", "3", "--device", "cpu",
                 "--output", str(out)]) == 0
    width, height = _png_size(out)
    assert width > height > 0  # 3 rows, 1 + 3 experts + overall + ERM CAM = 6 columns
    assert "wrote" in capsys.readouterr().out
    assert [f.name for f in tmp_path.iterdir()] == ["figure.png"]  # written atomically: no temporary left


def test_panels_are_maps_in_unit_range_with_boxes(runs):
    fineface, erm = runs
    method, cfg = load_trained_method(fineface, device="cpu")
    faces = sample_split(load_bundle(cfg), "test", 4)
    result = compute_maps(method, cfg, faces, torch.device("cpu"), cfg.data.image_size, classes=["a", "b"])
    assert [p.title for p in result.panels] == ["expert 1 (layer2)", "expert 2 (layer3)", "expert 3 (layer4)", "overall"]
    for panel in result.panels:
        assert panel.maps.shape == (4, 32, 32) and panel.maps.min() >= 0 and panel.maps.max() <= 1
        assert panel.boxes.shape == (4, 4)
        y0, y1, x0, x1 = panel.boxes.T
        assert ((0 <= y0) & (y0 < y1) & (y1 <= 32) & (0 <= x0) & (x0 < x1) & (x1 <= 32)).all()
    erm_method, erm_cfg = load_trained_method(erm, device="cpu")
    base = compute_maps(erm_method, erm_cfg, faces, torch.device("cpu"), 32)
    assert [p.title for p in base.panels] == ["CAM"] and base.panels[0].boxes is None


def test_sample_split_takes_groups_in_turn_deterministically(runs):
    _, erm = runs
    _, cfg = load_trained_method(erm, device="cpu")
    bundle = load_bundle(cfg)
    a = sample_split(bundle, "test", 8)
    b = sample_split(bundle, "test", 8)
    assert a.labels == b.labels and np.array_equal(a.images, b.images)
    groups = [label.split("\n")[0] for label in a.labels]
    present = [g for g in bundle.group_names if g in set(bundle.splits["test"].group_labels(bundle.task.protected))]
    assert groups == present[:8]  # synthface test: 8 groups, one face each
    # fewer faces than groups: spread over the order (one per skin tone, from I to IV)
    four = [label.split("\n")[0] for label in sample_split(bundle, "test", 4).labels]
    assert four == [present[0], present[2], present[4], present[6]]
    assert [g.split("|")[0] for g in four] == ["I", "II", "III", "IV"]


def test_explain_image_files_and_an_erm_run_alone(runs, tmp_path):
    _, erm = runs
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(face)
    out = tmp_path / "erm.png"
    assert main(["explain", str(erm), "--image", str(face), "--image", str(face), "--device", "cpu",
                 "--output", str(out)]) == 0
    assert _png_size(out)[0] > 0


def test_explain_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert main(["explain", str(tmp_path), "--output", str(tmp_path / "x.png")]) == 2
    assert "not a finished run" in capsys.readouterr().err
