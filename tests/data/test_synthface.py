"""SynthFace: determinism, shapes, the balanced test split and the measured effect of each bias knob."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fairbench.data.base import DatasetError, Task
from fairbench.data.synthface import (
    PRESENTATIONS,
    SKIN_TONES,
    TARGETS,
    SynthFace,
    SynthFaceOptions,
    render,
    sample_split,
)
from fairbench.registry import datasets

PROTECTED = ("skin_tone", "presentation")
SMALL = dict(n_train=96, n_val=32, n_test=64)


def load(target: str = "smiling", image_size: int = 32, **options):
    opts = SynthFaceOptions(**{**SMALL, **options})
    return SynthFace(None, opts).load(Task(target, PROTECTED), image_size)


def phi(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float), b.astype(float))[0, 1])


def test_registered_with_the_contract_attributes():
    assert datasets.get("synthface") is SynthFace
    assert SynthFace.default_target == "smiling"
    assert SynthFace.default_protected == PROTECTED
    assert SynthFace.profile == "cpu-small" and SynthFace.needs_root is False
    assert SynthFace.default_image_size in (48, 64)
    assert SynthFace(None).targets() == ["smiling", "eyeglasses", "narrow_eyes"]
    assert SynthFace.summary and "\n" not in SynthFace.summary
    for name, field in SynthFaceOptions.model_fields.items():
        assert field.description, f"option {name} has no description"


def test_same_seed_gives_identical_data_and_other_seed_differs():
    a, b, c = load(seed=3), load(seed=3), load(seed=4)
    for split in ("train", "val", "test"):
        sa, sb, sc = a.splits[split], b.splits[split], c.splits[split]
        assert np.array_equal(sa.images, sb.images)
        assert np.array_equal(sa.targets, sb.targets)
        assert sa.attributes.equals(sb.attributes)
        assert not np.array_equal(sa.images, sc.images)
    assert a.info == b.info


def test_shapes_dtypes_ids_and_columns():
    bundle = load(image_size=40)
    assert bundle.classes == ["no", "yes"]
    for split, n in (("train", 96), ("val", 32), ("test", 64)):
        s = bundle.splits[split]
        assert s.images.shape == (n, 40, 40, 3) and s.images.dtype == np.uint8
        assert s.targets.dtype == np.int64 and set(np.unique(s.targets)) <= {0, 1}
        assert s.sample_ids[0] == f"{split}/000000" and len(set(s.sample_ids)) == n
        assert set(s.attributes.columns) >= {*PROTECTED, *TARGETS}
        assert set(s.attributes["skin_tone"]) <= set(SKIN_TONES)
        assert set(s.attributes["presentation"]) <= set(PRESENTATIONS)
        # the target column and the integer targets agree: index 1 = "yes"
        assert np.array_equal(s.targets, (s.attributes["smiling"] == "yes").to_numpy().astype(np.int64))
        assert sum(bundle.info["group_counts"][split].values()) == n
    assert len(bundle.group_names) == 8
    assert bundle.info["options"]["n_train"] == 96


def test_loads_only_the_requested_splits_identically():
    full = load(seed=5)
    only_test = SynthFace(None, SynthFaceOptions(**SMALL, seed=5)).load(Task("smiling", PROTECTED), 32, splits=("test",))
    assert list(only_test.splits) == ["test"]
    assert np.array_equal(only_test.splits["test"].images, full.splits["test"].images)
    assert list(only_test.info["group_counts"]) == ["test"]
    with pytest.raises(DatasetError, match="split"):
        SynthFace(None, SynthFaceOptions(**SMALL)).load(Task("smiling", PROTECTED), 32, splits=("dev",))


def test_groups_are_listed_light_to_dark():
    bundle = load()
    assert bundle.group_names[0] == "I|short_hair" and bundle.group_names[-1] == "IV|long_hair"
    assert [g.split("|")[0] for g in bundle.group_names[::2]] == list(SKIN_TONES)


def test_test_split_is_balanced_over_groups_and_classes():
    s = load(n_test=160).splits["test"]
    cells = s.attributes.groupby(["skin_tone", "presentation", "smiling"]).size()
    assert len(cells) == 16 and set(cells) == {10}
    # and within one of each other when n_test is not a multiple of 16
    s = load(n_test=100).splits["test"]
    groups = s.attributes.groupby(["skin_tone", "presentation"]).size()
    cells = s.attributes.groupby(["skin_tone", "presentation", "smiling"]).size()
    assert len(groups) == 8 and groups.max() - groups.min() <= 2 and cells.max() - cells.min() <= 1


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_is_selectable(target):
    bundle = load(target=target, n_test=64)
    for s in bundle.splits.values():
        assert np.array_equal(s.targets, (s.attributes[target] == "yes").to_numpy().astype(np.int64))
    cells = bundle.splits["test"].attributes.groupby(["skin_tone", "presentation", target]).size()
    assert set(cells) == {4}


def test_bad_task_and_bad_options_are_rejected():
    with pytest.raises(DatasetError, match="no target"):
        SynthFace(None).load(Task("Male", PROTECTED), 32)
    with pytest.raises(DatasetError, match="protected"):
        SynthFace(None).load(Task("smiling", ("race",)), 32)
    with pytest.raises(ValidationError, match="n_trian"):
        SynthFaceOptions(n_trian=10)
    with pytest.raises(ValidationError):
        SynthFaceOptions(train_skin_tone_shares=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValidationError):
        SynthFaceOptions(spurious_correlation=1.5)


def test_group_imbalance_follows_the_configured_shares():
    opts = SynthFaceOptions(train_skin_tone_shares=(0.55, 0.25, 0.15, 0.05), train_presentation_shares=(0.7, 0.3))
    lat = sample_split("train", 6000, "smiling", opts)
    tone_share = np.bincount(lat["skin_tone"], minlength=4) / 6000
    assert np.allclose(tone_share, (0.55, 0.25, 0.15, 0.05), atol=0.02)
    assert abs(lat["presentation"].mean() - 0.3) < 0.02
    # the test split ignores the shares
    lat = sample_split("test", 1600, "smiling", opts)
    assert set(np.bincount(lat["skin_tone"])) == {400}


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_spurious_background_correlates_with_the_target_in_train_and_val_only(rho):
    opts = SynthFaceOptions(spurious_correlation=rho)
    for split in ("train", "val"):
        lat = sample_split(split, 6000, "eyeglasses", opts)
        assert abs(phi(lat["eyeglasses"], lat["background"]) - rho) < 0.04
    lat = sample_split("test", 1600, "eyeglasses", opts)
    assert abs(phi(lat["eyeglasses"], lat["background"])) < 1e-9


def test_spurious_background_is_visible_in_the_pixels():
    bundle = load(n_train=400, n_test=400, spurious_correlation=0.8, image_size=32)
    for split, expected in (("train", 0.8), ("test", 0.0)):
        s = bundle.splits[split]
        corner = s.images[:, :3, :3].reshape(len(s), -1, 3).astype(float).mean(1)
        warm_pixels = corner[:, 0] > corner[:, 2]  # background: red above blue = warm
        assert np.array_equal(warm_pixels, (s.attributes["background"] == "warm").to_numpy())
        assert abs(phi(warm_pixels, s.targets) - expected) < 0.12


def cue_energy_by_tone(target: str, contrast: tuple[float, float, float, float]) -> np.ndarray:
    """Mean absolute pixel change from switching a target cue on, per skin tone (no noise)."""
    opts = SynthFaceOptions(cue_contrast=contrast, noise_std=0.0)
    lat = sample_split("test", 512, target, opts)
    on, off = dict(lat), dict(lat)
    on[target], off[target] = np.ones_like(lat[target]), np.zeros_like(lat[target])
    if target == "smiling":  # the cue is the mouth's shape: an open smile vs. a flat closed mouth
        on["curvature"], off["curvature"] = np.full_like(lat["curvature"], 0.1), np.zeros_like(lat["curvature"])
        on["opening"], off["opening"] = np.full_like(lat["opening"], 0.08), np.zeros_like(lat["opening"])
    diff = np.abs(render(on, 40).astype(float) - render(off, 40).astype(float)).mean(axis=(1, 2, 3))
    return np.array([diff[lat["skin_tone"] == t].mean() for t in range(4)])


@pytest.mark.parametrize("target", ["eyeglasses", "smiling"])
def test_cue_contrast_weakens_the_cue_for_the_configured_tones(target):
    contrast = (1.0, 0.8, 0.55, 0.4)
    energy = cue_energy_by_tone(target, contrast)
    assert energy.min() > 0
    ratio = energy / energy[0]
    assert np.all(np.diff(energy) < 0), energy  # darker tone, weaker cue
    assert np.allclose(ratio, contrast, atol=0.12), ratio
    # equal contrast: the same absolute cue strength on every tone
    flat = cue_energy_by_tone(target, (1.0, 1.0, 1.0, 1.0))
    assert np.allclose(flat / flat[0], 1.0, atol=0.12), flat
