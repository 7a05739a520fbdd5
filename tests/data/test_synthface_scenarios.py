"""The known-answer scenarios of SynthFace: each mechanism is present where it should be and absent elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fairbench.config import RunConfig, resolve
from fairbench.data.base import DatasetError, Task
from fairbench.data.synthface import (
    SCENARIO_GROUPS,
    SCENARIOS,
    SynthFaceLabelNoise,
    SynthFaceLabelShift,
    SynthFaceSpurious,
    SynthFaceUnderrepresented,
    render,
    sample_scenario_split,
)
from fairbench.registry import datasets

BIG = dict(n_train=4000, n_val=64, n_test=800)


def latents(cls, split="train", target="smiling", **options):
    opts = cls.Options(**{**BIG, **options})
    n = {"train": opts.n_train, "val": opts.n_val, "test": opts.n_test}[split]
    return sample_scenario_split(split, n, target, cls.scenario, opts)


def test_every_scenario_is_registered_with_one_documented_dial():
    assert set(SCENARIOS) == {"spurious", "underrepresented", "label_shift", "label_noise", "none"}
    for scenario, cls in SCENARIOS.items():
        assert datasets.get(f"synthface-{scenario.replace('_', '-')}") is cls
        assert cls.summary and "\n" not in cls.summary and cls.mechanism
        extra = set(cls.Options.model_fields) - {"n_train", "n_val", "n_test", "seed"}
        assert extra == ({cls.Options.dial} if cls.Options.dial else set()), scenario
        for name, field in cls.Options.model_fields.items():
            assert field.description, f"{scenario}: option {name} has no description"
    assert SCENARIOS["none"].Options.dial is None


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_load_is_deterministic_and_the_test_split_is_balanced(scenario):
    cls = SCENARIOS[scenario]
    small = dict(n_train=40, n_val=24, n_test=80, seed=5)
    a = cls(None, cls.Options(**small)).load(Task("smiling", ("skin_tone",)), 16)
    b = cls(None, cls.Options(**small)).load(Task("smiling", ("skin_tone",)), 16)
    for split in ("train", "val", "test"):
        assert np.array_equal(a.splits[split].images, b.splits[split].images)
        assert a.splits[split].attributes.equals(b.splits[split].attributes)
    assert a.splits["test"].images.shape == (80, 16, 16, 3)
    assert a.group_names == list(SCENARIO_GROUPS)
    test = a.splits["test"].attributes
    drawn = (test["smiling"] == "yes") ^ (test["label_flipped"] == "yes")  # the target the pixels carry
    cells = test.assign(drawn=drawn).groupby(["skin_tone", "drawn", "background"]).size()
    assert len(cells) == 8 and set(cells) == {10}
    assert a.info["scenario"] == scenario
    assert a.name == cls.registered_name  # synthface-label-shift, not synthface-label_shift


def test_spurious_background_agrees_with_the_target_in_train_only():
    for agreement in (0.6, 0.95):
        lat = latents(SynthFaceSpurious, agreement=agreement)
        assert abs((lat["background"] == lat["smiling"]).mean() - agreement) < 0.02
    test = latents(SynthFaceSpurious, "test")
    assert (test["background"] == test["smiling"]).mean() == 0.5
    bundle = SynthFaceSpurious(None, SynthFaceSpurious.Options(n_train=200, n_val=40, n_test=80)).load(
        Task("smiling", ("bias_aligned",)), 16)
    train = bundle.splits["train"].attributes
    aligned = (train["background"] == "warm") == (train["smiling"] == "yes")
    assert ((train["bias_aligned"] == "aligned") == aligned).all()
    assert bundle.group_names == ["aligned", "conflicting"]
    assert SynthFaceSpurious.default_protected == ("bias_aligned",)


def test_underrepresented_tone_is_rare_and_drawn_with_lighter_features():
    lat = latents(SynthFaceUnderrepresented, minority_share=0.05)
    minority = lat["skin_tone"] == 3
    assert abs(minority.mean() - 0.05) < 0.015
    assert (lat["contrast"][minority] == -1).all() and (lat["contrast"][~minority] == 1).all()
    # the same face with the sign of its feature contrast flipped: the features get lighter, not darker
    one = {k: v[:1] for k, v in lat.items()}
    dark = render({**one, "contrast": np.array([1.0], np.float32), "noise": np.zeros(1)}, 64).astype(int)
    light = render({**one, "contrast": np.array([-1.0], np.float32), "noise": np.zeros(1)}, 64).astype(int)
    assert (light != dark).any() and (light - dark).sum() > 0  # lighter on the whole (brows and teeth flip too)
    assert np.mean(latents(SynthFaceUnderrepresented, "test")["skin_tone"] == 3) == 0.5


def test_label_shift_changes_the_minority_prevalence_in_train_not_in_test():
    lat = latents(SynthFaceLabelShift, minority_prevalence=0.1)
    minority = lat["skin_tone"] == 3
    assert abs(lat["label"][minority].mean() - 0.1) < 0.03
    assert abs(lat["label"][~minority].mean() - 0.5) < 0.04
    test = latents(SynthFaceLabelShift, "test")
    assert test["label"][test["skin_tone"] == 3].mean() == 0.5


def test_label_noise_flips_only_tone_iv_labels_and_not_the_pixels():
    lat = latents(SynthFaceLabelNoise, "test", noise_rate=0.2)
    minority = lat["skin_tone"] == 3
    flipped = lat["label"] != lat["smiling"]
    assert not flipped[~minority].any()
    assert flipped[minority].sum() == 80 and np.array_equal(flipped, lat["label_flipped"] == 1)
    train = latents(SynthFaceLabelNoise, noise_rate=0.2)
    rate = (train["label"] != train["smiling"])[train["skin_tone"] == 3].mean()
    assert abs(rate - 0.2) < 0.03
    clean = latents(SynthFaceLabelNoise, noise_rate=0.0)
    assert np.array_equal(clean["label"], clean["smiling"])


def test_none_has_no_bias():
    lat = latents(SCENARIOS["none"])
    assert abs((lat["skin_tone"] == 3).mean() - 0.5) < 0.03
    assert abs((lat["background"] == lat["smiling"]).mean() - 0.5) < 0.03
    assert np.array_equal(lat["label"], lat["smiling"]) and (lat["contrast"] == 1).all()


def test_bad_dials_and_tasks_are_rejected():
    with pytest.raises(ValidationError):
        SynthFaceSpurious.Options(agreement=1.2)
    with pytest.raises(ValidationError):
        SynthFaceLabelNoise.Options(noise_rate=0.5)
    with pytest.raises(ValidationError):
        SynthFaceSpurious.Options(minority_share=0.1)  # another scenario's dial
    ds = SynthFaceSpurious(None, SynthFaceSpurious.Options(n_train=32, n_val=16, n_test=16))
    with pytest.raises(DatasetError, match="no target"):
        ds.load(Task("age", ("skin_tone",)), 16)
    noisy = SynthFaceLabelNoise(None, SynthFaceLabelNoise.Options(n_train=32, n_val=16, n_test=16))
    for call in (noisy.load, noisy.fingerprint):  # the message names the dataset as registered
        with pytest.raises(DatasetError, match="^synthface-label-noise has no target 'age'"):
            call(Task("age", ("skin_tone",)), *([16] if call == noisy.load else []))
    with pytest.raises(DatasetError, match="invalid protected"):
        ds.load(Task("smiling", ("smiling",)), 16)


def test_scenarios_default_to_a_converged_budget_and_synthface_keeps_its_own():
    scenario = resolve(RunConfig.model_validate({"data": {"name": "synthface-spurious"}}))
    assert scenario.train.epochs == SynthFaceSpurious.run_defaults["train"]["epochs"]
    assert scenario.backbone.name == "resnet_tiny"
    assert scenario.data.image_size == 32 and scenario.data.protected == ["bias_aligned"]
    assert scenario.data.options["agreement"] == 0.95
    default = resolve(RunConfig())
    assert default.data.name == "synthface" and default.train.epochs == 8 and default.data.image_size == 64
