"""The decoded-image cache: decode once, rebuild on change, atomic, bad images named or skipped."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

from fairbench.data import image_cache
from fairbench.data.base import DatasetError
from fairbench.data.image_cache import decode_image, decode_images

from tests.kit import corrupt_file, truncate_file, write_jpegs


@pytest.fixture
def jpegs(tmp_path):
    paths = [tmp_path / "src" / f"{i}.jpg" for i in range(6)]
    write_jpegs(paths, (178, 218))
    return paths


def test_decodes_once_then_reads_the_cache(tmp_path, jpegs):
    calls = []
    first = decode_images(jpegs, 32, name="t-train", cache_dir=tmp_path / "c", progress=lambda d, t: calls.append((d, t)))
    assert first.built and first.images.shape == (6, 32, 32, 3) and first.images.dtype == np.uint8
    assert calls[-1] == (6, 6)
    assert first.path.name.startswith("t-train-32px-") and first.path.suffix == ".u8"
    assert first.path.with_suffix(".json").is_file()
    again = decode_images(jpegs, 32, name="t-train", cache_dir=tmp_path / "c")
    assert not again.built and again.path == first.path
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    np.testing.assert_array_equal(again.kept, np.arange(6))
    assert not list((tmp_path / "c").glob("*.tmp")) and not list((tmp_path / "c").glob(".*.tmp"))


def test_resize_rule_is_a_square_resize_of_the_whole_image(tmp_path):
    src = tmp_path / "a.png"  # PNG: no JPEG draft, so the rule is exactly PIL's bilinear resize
    pixels = np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(src)
    out = decode_images([src], 40, name="r", cache_dir=tmp_path / "c").images[0]
    expected = np.asarray(Image.fromarray(pixels).resize((40, 40), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)


def test_changed_sources_and_sizes_get_their_own_cache(tmp_path, jpegs):
    a = decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c")
    b = decode_images(jpegs, 48, name="t", cache_dir=tmp_path / "c")
    assert b.path != a.path and b.images.shape[1] == 48
    write_jpegs([jpegs[0]], (120, 120), seed=7)  # same name, new content (size / mtime change)
    later = time.time() + 5
    os.utime(jpegs[0], (later, later))
    c = decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c")
    assert c.built and c.path != a.path
    assert not np.array_equal(np.asarray(c.images[0]), np.asarray(a.images[0]))
    np.testing.assert_array_equal(np.asarray(c.images[1:]), np.asarray(a.images[1:]))


@pytest.mark.parametrize("damage", [truncate_file, corrupt_file, os.remove])
def test_bad_image_is_an_error_naming_file_and_row(tmp_path, jpegs, damage):
    damage(jpegs[3])
    rows = [f"labels.csv line {i + 2}" for i in range(len(jpegs))]
    with pytest.raises(DatasetError) as err:
        decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c", rows=rows)
    assert str(jpegs[3]) in str(err.value) and "labels.csv line 5" in str(err.value)
    assert "on_bad_image=skip" in str(err.value)
    leftovers = list((tmp_path / "c").iterdir()) if (tmp_path / "c").exists() else []
    assert leftovers == [], leftovers  # nothing half-built stays behind (a missing file: not even the folder)


def test_skip_policy_counts_and_compacts(tmp_path, jpegs):
    reference = decode_images(jpegs, 32, name="ref", cache_dir=tmp_path / "ref")
    truncate_file(jpegs[1])
    corrupt_file(jpegs[4])
    os.remove(jpegs[5])
    got = decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c", on_bad_image="skip")
    np.testing.assert_array_equal(got.kept, [0, 2, 3])
    assert [b.index for b in got.bad] == [1, 4, 5]
    assert got.bad[2].reason == "file is missing"
    np.testing.assert_array_equal(np.asarray(got.images), np.asarray(reference.images)[[0, 2, 3]])
    # read back from the cache: the same, and "error" still reports the recorded bad files
    again = decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c", on_bad_image="skip")
    assert not again.built and [b.index for b in again.bad] == [1, 4, 5]
    with pytest.raises(DatasetError, match=r"5\.jpg \(item 5\): file is missing"):  # missing: found before decoding
        decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c", on_bad_image="error")


def test_bad_images_recorded_in_the_cache_are_still_errors_under_the_error_policy(tmp_path, jpegs):
    truncate_file(jpegs[1])
    decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c", on_bad_image="skip")
    with pytest.raises(DatasetError, match=r"1\.jpg \(item 1\)"):
        decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c", on_bad_image="error")


def test_a_crash_mid_build_leaves_no_cache_that_is_read_later(tmp_path, jpegs):
    def crash(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decode_images(jpegs * 40, 32, name="t", cache_dir=tmp_path / "c", progress=crash, workers=1)
    assert list((tmp_path / "c").iterdir()) == []
    good = decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c")
    # a data file whose sidecar does not vouch for it (e.g. cut short) is rebuilt, not read
    with open(good.path, "r+b") as fh:
        fh.truncate(100)
    rebuilt = decode_images(jpegs, 32, name="t", cache_dir=tmp_path / "c")
    assert rebuilt.built and rebuilt.images.shape == (6, 32, 32, 3)


def test_cache_folder_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path / "env"))
    assert image_cache.default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("FAIRBENCH_CACHE")
    assert image_cache.default_cache_dir() == image_cache.Path.home() / ".cache" / "fairbench"


def test_decode_image_uses_jpeg_draft_but_keeps_the_size(tmp_path, jpegs):
    assert decode_image(jpegs[0], 24).shape == (24, 24, 3)
    assert decode_image(jpegs[0], 300).shape == (300, 300, 3)  # upsampled, never drafted below S


def _wide_grey(tmp_path, kind: str):
    """A greyscale gradient wider than 8 bits, saved by PIL, and the 8-bit mean it stands for."""
    ramp = np.linspace(0.05, 0.72, 48 * 40).reshape(48, 40)  # fractions of full scale, mean 0.385
    if kind == "png-16":  # mode I;16: what a 16-bit scan or medical export is
        image, path = Image.fromarray(np.round(ramp * 65535).astype(np.uint16)), tmp_path / "grey16.png"
    elif kind == "tiff-32":  # mode I holding 16-bit values (how Pillow opens many 16-bit files)
        image, path = Image.fromarray(np.round(ramp * 65535).astype(np.int32)), tmp_path / "grey32.tiff"
    else:  # mode F, 0..1
        image, path = Image.fromarray(ramp.astype(np.float32)), tmp_path / "greyf.tiff"
    image.save(path)
    return path, ramp.mean() * 255


@pytest.mark.parametrize("kind", ["png-16", "tiff-32", "float"])
def test_wide_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path, kind):
    path, expected = _wide_grey(tmp_path, kind)
    with Image.open(path) as im:
        assert im.mode in image_cache.WIDE_GREY_MODES
        clipped = np.asarray(im.convert("RGB")).mean()
    got = decode_images([path], 40, name="grey", cache_dir=tmp_path / "c").images
    assert abs(float(np.asarray(got).mean()) - expected) < 1, (float(np.asarray(got).mean()), expected)
    if kind != "float":
        assert clipped > 250  # what PIL's own conversion makes of it: white
    np.testing.assert_array_equal(got[0, :, :, 0], got[0, :, :, 2])  # still grey
