"""Configuration: TOML + flags + --set, unknown keys, profile defaults, run ids."""

from __future__ import annotations

import pytest

from fairbench.config import ConfigError, build_config, parse_value, resolve, run_id


def test_set_values_are_typed_toml_literals():
    assert parse_value("3") == 3
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("resnet50") == "resnet50"


def test_precedence_file_then_flags_then_set(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('method = "erm"\n[train]\nepochs = 3\nseed = 7\nbatch_size = 16\n')
    cfg = build_config(toml, {"train.epochs": 5}, ["train.seed=9"])
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.batch_size) == (5, 9, 16)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        build_config(None, {}, ["train.epoch=3"])
    assert "train.epoch" in str(err.value) and "train.epochs" in str(err.value)


def test_unknown_hparam_lists_the_methods_hparams():
    with pytest.raises(ConfigError) as err:
        resolve(build_config(None, {"method": "erm"}, ["hparams.smoothing=0.1"]))
    assert "smoothing" in str(err.value) and "label_smoothing" in str(err.value)


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match="train.epochs"):
        build_config(None, {}, ["train.epochs=many"])


def test_resolve_fills_profile_defaults_and_user_values_win():
    cfg = resolve(build_config(None, {"method": "erm", "train.lr": 0.01}))
    assert cfg.data.name == "synthface" and cfg.backbone.name == "resnet_tiny"
    assert cfg.train.lr == 0.01 and cfg.train.epochs is not None
    assert cfg.hparams == {"label_smoothing": 0.0} and cfg.selection == "accuracy"


def test_run_id_ignores_where_and_depends_on_what(tmp_path):
    a = resolve(build_config(None, {"method": "erm"}))
    b = resolve(build_config(None, {"method": "erm", "data.root": str(tmp_path), "train.device": "cpu"}))
    c = resolve(build_config(None, {"method": "erm", "train.seed": 1}))
    assert run_id(a) == run_id(b)
    assert run_id(a) != run_id(c)
    assert run_id(a).startswith("erm-synthface-")
