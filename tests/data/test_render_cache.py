"""The synthface render cache: a suite's jobs render a dataset once, and the pixels are the rendered ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.data import render_cache
from fairbench.data.synthface import SynthFace, render, render_all
from tests.conftest import tiny_config


def _latents(n: int = 40, seed: int = 0):
    return SynthFace(None, SynthFace.Options(seed=seed)).sample("val", n, "smiling")


class CountingRender:
    def __init__(self):
        self.calls = 0

    def __call__(self, lat, image_size):
        self.calls += 1
        return render_all(lat, image_size)


def test_a_second_load_reads_the_pixels_it_rendered_first(tmp_path: Path):
    lat, counting = _latents(), CountingRender()
    first = render_cache.rendered("synthface", "val", lat, 32, tmp_path, counting, render)
    again = render_cache.rendered("synthface", "val", lat, 32, tmp_path, counting, render)
    assert counting.calls == 1
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(first, render_all(lat, 32))
    assert len(list((tmp_path / "rendered").glob("*.npy"))) == 1
    assert not list((tmp_path / "rendered").glob(".*.tmp"))  # written atomically: no temporaries left


def test_other_latents_or_sizes_are_other_entries(tmp_path: Path):
    counting = CountingRender()
    render_cache.rendered("synthface", "val", _latents(seed=0), 32, tmp_path, counting, render)
    render_cache.rendered("synthface", "val", _latents(seed=1), 32, tmp_path, counting, render)
    render_cache.rendered("synthface", "val", _latents(seed=0), 40, tmp_path, counting, render)
    assert counting.calls == 3


def test_an_altered_or_half_written_entry_is_rendered_again(tmp_path: Path):
    lat, counting = _latents(), CountingRender()
    truth = render_cache.rendered("synthface", "val", lat, 32, tmp_path, counting, render)
    (data,) = (tmp_path / "rendered").glob("*.npy")
    pixels = np.load(data)
    pixels[0, 0, 0, 0] ^= 1
    np.save(data, pixels)
    np.testing.assert_array_equal(render_cache.rendered("synthface", "val", lat, 32, tmp_path, counting, render), truth)
    assert counting.calls == 2
    data.write_bytes(data.read_bytes()[:100])  # truncated
    np.testing.assert_array_equal(render_cache.rendered("synthface", "val", lat, 32, tmp_path, counting, render), truth)
    assert counting.calls == 3


def test_an_unwritable_cache_folder_costs_only_the_rendering(tmp_path: Path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    lat = _latents()
    np.testing.assert_array_equal(render_cache.rendered("synthface", "val", lat, 32, blocked, render_all, render),
                                  render_all(lat, 32))


def test_a_run_predicts_the_same_with_the_cache_cold_warm_and_off(tmp_path: Path, monkeypatch):
    """Bit for bit: the test predictions of a tiny ERM run without the cache, with it empty, and read from it."""
    from fairbench.training.run import execute

    cache = tmp_path / "cache"

    def predictions(name: str) -> pd.DataFrame:
        run = execute(tiny_config("erm", **{"data.cache_dir": str(cache)}), tmp_path / name)
        return pd.read_csv(run / "predictions_test.csv")

    monkeypatch.setenv(render_cache.CACHE_ENV, "0")
    off = predictions("off")
    assert not (cache / "rendered").exists()
    monkeypatch.delenv(render_cache.CACHE_ENV)
    cold = predictions("cold")
    assert len(list((cache / "rendered").glob("*.npy"))) == 3  # train, val, test
    warm = predictions("warm")
    pd.testing.assert_frame_equal(cold, off)
    pd.testing.assert_frame_equal(warm, off)
    assert (off[[c for c in off.columns if c.startswith("score_")]].nunique() > 1).all()  # a trained model's scores


@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("1", True)])
def test_the_cache_can_be_turned_off(monkeypatch, value, on):
    monkeypatch.setenv(render_cache.CACHE_ENV, value)
    assert render_cache.enabled() is on
