"""Search spaces declared beside the hyperparameters, and deterministic random-search trials."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import Field

from fairbench import registry
from fairbench.cli import main
from fairbench.methods.base import Hparams
from fairbench.search_spaces import TRAIN_SPACES, Choice, IntUniform, LogUniform, Uniform, hparam_space, searched
from fairbench.suites.search import SearchSpaceError, sample_trial

METHODS = sorted(registry.methods.names())


def test_trial_zero_is_the_defaults():
    for name in METHODS:
        assert sample_trial(name, registry.methods.get(name).Hparams, "cpu-small", 0, 0) == {"hparams": {}, "train": {}}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("profile", sorted(TRAIN_SPACES))
def test_every_method_draws_valid_trials(method, profile):
    hparams_model = registry.methods.get(method).Hparams
    space = hparam_space(hparams_model)
    for trial in range(1, 16):
        drawn = sample_trial(method, hparams_model, profile, search_seed=0, trial=trial)
        assert set(drawn["hparams"]) == set(space)
        hparams_model.model_validate(drawn["hparams"])  # never raises: every drawn value is valid
        assert set(drawn["train"]) == {*TRAIN_SPACES[profile], "backbone_lr"}
        lr = drawn["train"]["lr"]
        assert TRAIN_SPACES[profile]["lr"].low <= lr <= TRAIN_SPACES[profile]["lr"].high


def test_the_mitigation_methods_declare_what_they_tune():
    # the methods whose strength is a weight or step size are searched over it
    expected = {"groupdro": {"eta", "generalization_adjustment"}, "jtt": {"identification_epochs", "upweight"},
                "fair_mixup": {"lam"}, "gap_regularizer": {"lam"}, "adversarial": {"alpha", "adversary_lr"},
                "consistency": {"alpha"}, "multitask": {"attribute_weight"},
                "fineface": {"threshold", "concat_loss_weight"}}
    for method, keys in expected.items():
        assert set(hparam_space(registry.methods.get(method).Hparams)) == keys


def test_trials_are_deterministic_and_independent_of_each_other():
    model = registry.methods.get("groupdro").Hparams
    a = sample_trial("groupdro", model, "cpu-small", 7, 3)
    assert a == sample_trial("groupdro", model, "cpu-small", 7, 3)
    assert a != sample_trial("groupdro", model, "cpu-small", 7, 4)
    assert a != sample_trial("groupdro", model, "cpu-small", 8, 3)
    # another method's trial 3 draws from its own stream
    assert sample_trial("jtt", registry.methods.get("jtt").Hparams, "cpu-small", 7, 3)["train"] != a["train"]


def test_distributions_stay_in_range():
    rng = np.random.default_rng(0)
    assert all(1e-3 <= LogUniform(1e-3, 1e-1).sample(rng) <= 1e-1 for _ in range(200))
    assert all(-1 <= Uniform(-1, 2).sample(rng) <= 2 for _ in range(200))
    ints = {IntUniform(1, 3).sample(rng) for _ in range(200)}
    assert ints == {1, 2, 3}
    assert {Choice(("a", "b")).sample(rng) for _ in range(200)} == {"a", "b"}
    # log-uniform: about as many draws per decade
    draws = np.array([LogUniform(1e-3, 1e-1).sample(rng) for _ in range(4000)])
    assert 0.4 < np.mean(draws < 1e-2) < 0.6


def test_a_space_that_draws_invalid_values_names_the_key():
    class Bad(Hparams):
        eta: float = Field(0.1, gt=0, json_schema_extra=searched(Uniform(-2.0, -1.0)))

    with pytest.raises(SearchSpaceError, match=r"bad: search space of hparams\.eta drew -1\.\d+.*fails validation"):
        sample_trial("bad", Bad, "cpu-small", 0, 1)


def test_unknown_profile_is_an_error():
    with pytest.raises(SearchSpaceError, match="no training search space for dataset profile 'gpu-huge'"):
        sample_trial("erm", registry.methods.get("erm").Hparams, "gpu-huge", 0, 1)


def test_show_method_prints_defaults_and_search_space(capsys):
    assert main(["show", "method", "groupdro", "--profile", "cpu-small"]) == 0
    out = capsys.readouterr().out
    assert "needs in training: T+A; default selection: worst_group_accuracy" in out
    line = next(l for l in out.splitlines() if l.startswith("hparams.eta"))
    assert "0.01" in line and "log-uniform [0.001, 0.1]" in line
    assert "train.lr (cpu-small)" in out and "train.lr (paper)" not in out
    assert next(l for l in out.splitlines() if l.startswith("hparams.groups")).split()[2] == "fixed"


def test_show_unknown_method_is_a_clear_error(capsys):
    assert main(["show", "method", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_the_spaces_hold_the_regularisation_the_literature_tunes(capsys):
    """Weight decay up to 1 for every method; GroupDRO's step size and adjustment C; JTT's
    upweight and first-phase length: searched, defaults unchanged, shown by show method."""
    for profile, dists in TRAIN_SPACES.items():
        assert dists["weight_decay"] == LogUniform(1e-4, 1.0)
        draws = [sample_trial("erm", registry.methods.get("erm").Hparams, profile, 0, t)["train"]["weight_decay"]
                 for t in range(1, 201)]
        assert min(draws) < 1e-3 and max(draws) > 0.1
    expected = {"groupdro": {"eta": (0.01, "log-uniform [0.001, 0.1]"),
                             "generalization_adjustment": (0, "integer in [0, 5]")},
                "jtt": {"upweight": (50, "one of {5.0, 10.0, 20.0, 50.0, 100.0}"),
                        "identification_epochs": (1, "integer in [1, 3]")}}
    for method, keys in expected.items():
        assert main(["show", "method", method, "--profile", "cpu-small"]) == 0
        lines = capsys.readouterr().out.splitlines()
        for key, (default, space) in keys.items():
            line = next(l for l in lines if l.startswith(f"hparams.{key} "))
            assert float(line.split()[1]) == default and space in line
        line = next(l for l in lines if l.startswith("train.weight_decay (cpu-small)"))
        assert "0.0005" in line and "log-uniform [0.0001, 1]" in line
