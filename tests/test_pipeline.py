"""fairbench.pipeline: batch augmentation = torchvision's RandomCrop(padding) + flip + ToTensor + Normalize,
index batches (shuffled / weighted), and the prefetching BatchStream.

The crop tests do not replay the generator: each output image is decoded back into its crop
offsets and flip (the inputs encode their own row and column numbers), and then compared
pixel for pixel with torchvision applied with those parameters.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from fairbench.pipeline import BatchStream, epoch_batches, eval_batches, random_crop_flip, to_float

# -- helpers ------------------------------------------------------------------------------------------


def positional(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """B x H x W x 3 uint8: channel 0 = row + 1, channel 1 = column + 1 (0 is left for the padding)."""
    assert h < 255 and w < 255
    img = torch.empty(b, h, w, 3, dtype=torch.uint8)
    img[..., 0] = torch.arange(1, h + 1, dtype=torch.uint8)[None, :, None]
    img[..., 1] = torch.arange(1, w + 1, dtype=torch.uint8)[None, None, :]
    img[..., 2] = torch.randint(0, 256, (b, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return img


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Inverse of to_float (exact for its outputs)."""
    return torch.round((x * 0.5 + 0.5) * 255).to(torch.int64)


def crop_params(out: torch.Tensor, padding: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top, left, flipped) per sample of random_crop_flip's output on a positional() batch.

    top / left are torchvision's RandomCrop parameters: the crop's corner in the padded image."""
    _, _, h, w = out.shape
    r, c = h // 2, w // 2
    assert padding < r - 1 and padding < c - 1, "the centre pixels must come from the image, not the padding"
    u = to_uint8(out)
    top = (u[:, 0, r, c] - 1) - r + padding
    flipped = u[:, 1, r, c + 1] < u[:, 1, r, c]
    col_in_crop = torch.where(flipped, torch.full_like(top, w - 1 - c), torch.full_like(top, c))
    left = (u[:, 1, r, c] - 1) - col_in_crop + padding
    return top, left, flipped


def torchvision_reference(img_hwc: torch.Tensor, padding: int, top: int, left: int, flip: bool) -> torch.Tensor:
    """Pad with black, crop at (top, left), maybe flip, ToTensor, Normalize(0.5, 0.5): the paper's pipeline."""
    h, w, _ = img_hwc.shape
    chw = img_hwc.permute(2, 0, 1)
    if padding:
        chw = TF.pad(chw, [padding], fill=0)
    chw = TF.crop(chw, top, left, h, w)
    if flip:
        chw = TF.hflip(chw)
    return TF.normalize(chw.float().div(255), [0.5] * 3, [0.5] * 3)


# -- to_float -----------------------------------------------------------------------------------------


def test_to_float_matches_totensor_normalize():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (3, 7, 5, 3), dtype=np.uint8)
    raw[0, 0, 0] = (0, 255, 128)
    x = to_float(torch.from_numpy(raw))
    assert x.shape == (3, 3, 7, 5) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, :, 0, 0].tolist() == [-1.0, 1.0, pytest.approx(128 / 255 * 2 - 1, abs=1e-6)]
    for i in range(3):
        expected = TF.normalize(TF.to_tensor(Image.fromarray(raw[i])), [0.5] * 3, [0.5] * 3)
        assert torch.equal(x[i], expected)


def test_to_float_leaves_the_input_alone():
    raw = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    before = raw.clone()
    to_float(raw)
    assert torch.equal(raw, before)


# -- random_crop_flip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", [1, 3])
def test_crop_flip_equals_torchvision_with_the_same_parameters(padding):
    raw = positional(48, 10, 12)
    x = to_float(raw)
    before = x.clone()
    out = random_crop_flip(x, padding, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before), "the input batch must not be modified"
    top, left, flipped = crop_params(out, padding)
    assert ((top >= 0) & (top <= 2 * padding) & (left >= 0) & (left <= 2 * padding)).all()
    for i in range(len(raw)):
        ref = torchvision_reference(raw[i], padding, int(top[i]), int(left[i]), bool(flipped[i]))
        assert torch.equal(out[i], ref), f"sample {i}: top {int(top[i])} left {int(left[i])} flip {bool(flipped[i])}"


def test_crop_padding_is_black_after_normalisation():
    x = to_float(torch.full((256, 8, 8, 3), 200, dtype=torch.uint8))
    out = random_crop_flip(x, 2, torch.Generator().manual_seed(0))
    grey = x[0, 0, 0, 0].item()
    assert set(out.unique().tolist()) == {-1.0, grey}, "only the image value and black (-1) in the padding"
    assert (out == -1.0).flatten(1).any(1).float().mean() > 0.5, "most crops reach into the padding"


def test_crop_offsets_and_flips_are_spread():
    padding = 2
    out = random_crop_flip(to_float(positional(3000, 9, 9)), padding, torch.Generator().manual_seed(2))
    top, left, flipped = crop_params(out, padding)
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=2 * padding + 1)
        assert len(counts) == 2 * padding + 1
        assert (counts > 450).all() and (counts < 750).all(), counts.tolist()  # 600 each expected
    k = 2 * padding + 1
    pairs = torch.bincount(top * k + left, minlength=k * k)
    assert (pairs > 60).all(), "top and left are drawn independently"  # 120 each expected
    assert 0.45 < flipped.float().mean().item() < 0.55


def test_no_padding_only_flips():
    x = to_float(positional(400, 6, 7))
    out = random_crop_flip(x, 0, torch.Generator().manual_seed(3))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same ^ mirrored).all()
    assert 0.4 < mirrored.float().mean().item() < 0.6


def test_crop_flip_is_deterministic_with_a_seeded_generator():
    x = to_float(positional(64, 12, 12))
    a = random_crop_flip(x, 4, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, 4, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    gen = torch.Generator().manual_seed(7)
    first, second = random_crop_flip(x, 4, gen), random_crop_flip(x, 4, gen)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the generator advances


def test_crop_flip_without_a_generator_uses_the_global_seed():
    x = to_float(positional(32, 12, 12))
    torch.manual_seed(11)
    a = random_crop_flip(x, 3)
    torch.manual_seed(11)
    b = random_crop_flip(x, 3)
    assert torch.equal(a, b)


# -- epoch_batches / eval_batches ---------------------------------------------------------------------


def test_epoch_batches_drop_last():
    batches = epoch_batches(100, 32, np.random.default_rng(0))
    assert [len(b) for b in batches] == [32, 32, 32]
    drawn = np.concatenate(batches)
    assert len(np.unique(drawn)) == 96 and drawn.min() >= 0 and drawn.max() < 100
    assert epoch_batches(10, 32, np.random.default_rng(0)) == []


def test_epoch_batches_keep_last_is_a_permutation():
    batches = epoch_batches(100, 32, np.random.default_rng(0), drop_last=False)
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    drawn = np.concatenate(batches)
    assert np.array_equal(np.sort(drawn), np.arange(100))
    assert not np.array_equal(drawn, np.arange(100)), "shuffled"


def test_epoch_batches_are_reproducible():
    a = epoch_batches(50, 8, np.random.default_rng(5))
    b = epoch_batches(50, 8, np.random.default_rng(5))
    c = epoch_batches(50, 8, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_weighted_draws_follow_the_weights():
    n = 20_000
    weights = np.r_[np.full(n // 2, 3.0), np.full(n // 2, 1.0)]  # unnormalised: 3/4 of the draws from the first half
    weights[1::10] = 0.0
    batches = epoch_batches(n, 500, np.random.default_rng(0), weights)
    assert [len(b) for b in batches] == [500] * (n // 500)
    drawn = np.concatenate(batches)
    assert len(np.unique(drawn)) < n, "draws are with replacement"
    assert abs((drawn < n // 2).mean() - 0.75) < 0.02
    assert not np.isin(drawn, np.arange(1, n, 10)).any(), "zero weight: never drawn"
    as_list = epoch_batches(4, 2, np.random.default_rng(0), [0, 0, 1, 0])
    assert all((b == 2).all() for b in as_list)


@pytest.mark.parametrize("weights", [
    np.ones(9),  # wrong length
    np.ones((10, 1)),
    np.r_[np.ones(9), -1.0],
    np.r_[np.ones(9), np.nan],
    np.r_[np.ones(9), np.inf],
    np.zeros(10),
], ids=["short", "2-d", "negative", "nan", "inf", "all-zero"])
def test_bad_weights_are_refused(weights):
    with pytest.raises(ValueError, match="sampling weights must be 10 finite non-negative"):
        epoch_batches(10, 2, np.random.default_rng(0), weights)


def test_eval_batches_cover_everything_in_order():
    batches = eval_batches(10, 4)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert eval_batches(0, 4) == []


# -- BatchStream --------------------------------------------------------------------------------------


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (50, 4, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("prefetch", [0, 1, 2, 5])
def test_batch_stream_keeps_the_order(images, prefetch):
    rng = np.random.default_rng(1)
    batches = epoch_batches(50, 8, rng, drop_last=False)
    batches.append(np.array([7, 3, 7, 0, 3]))  # repeated indices, as weighted draws give
    got = list(BatchStream(images, torch.device("cpu"), prefetch=prefetch)(batches))
    assert len(got) == len(batches)
    for (idx, raw), expected in zip(got, batches):
        assert np.array_equal(idx, expected)
        assert raw.dtype == torch.uint8 and raw.shape == (len(expected), 4, 5, 3)
        assert np.array_equal(raw.numpy(), images[expected])


def test_batch_stream_reads_a_memmap(images, tmp_path):
    path = tmp_path / "cache.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=images.shape)
    mm[:] = images
    mm.flush()
    ro = np.memmap(path, dtype=np.uint8, mode="r", shape=images.shape)
    batches = epoch_batches(50, 16, np.random.default_rng(2))
    for idx, raw in BatchStream(ro, torch.device("cpu"))(batches):
        assert np.array_equal(raw.numpy(), images[idx])


class FailingImages:
    """An image array whose ``fail_at``-th read raises."""

    def __init__(self, images: np.ndarray, fail_at: int):
        self.images, self.fail_at, self.reads = images, fail_at, 0
        self.shape = images.shape

    def __getitem__(self, idx):
        self.reads += 1
        if self.reads == self.fail_at:
            raise OSError("disk read failed")
        return self.images[idx]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batch_stream_raises_the_worker_error_in_order(images, prefetch):
    threads = threading.active_count()
    batches = eval_batches(50, 10)
    stream = BatchStream(FailingImages(images, fail_at=3), torch.device("cpu"), prefetch=prefetch)
    seen = []
    with pytest.raises(OSError, match="disk read failed"):
        for idx, _ in stream(batches):
            seen.append(idx[0])
    assert seen == [0, 10], "the batches before the failing one arrive first"
    assert threading.active_count() == threads, "the prefetch thread has ended"


def test_batch_stream_stops_its_thread_when_the_consumer_leaves(images):
    threads = threading.active_count()
    stream = BatchStream(images, torch.device("cpu"), prefetch=1)
    it = stream(eval_batches(50, 2))
    next(it)
    it.close()
    assert threading.active_count() == threads


# -- augment_uint8: the fast path the runner uses ----------------------------------------------------

@pytest.mark.parametrize("padding", [0, 1, 3, 8])
@pytest.mark.parametrize("seed", [0, 5])
def test_augment_uint8_equals_the_reference_composition(padding, seed):
    from fairbench.pipeline import augment_uint8

    raw = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (9, 11, 13, 3), dtype=np.uint8))
    expected = random_crop_flip(to_float(raw.clone()), padding, torch.Generator().manual_seed(seed))
    got = augment_uint8(raw, padding, torch.Generator().manual_seed(seed))
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, expected)


def test_augment_uint8_accelerator_path_matches():
    """The gather path (taken on CUDA) gives the same result as the reference, run here on CPU tensors."""
    from fairbench.pipeline import _crop_flip_gather, _draws

    raw = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 10, 10, 3), dtype=np.uint8))
    for padding in (0, 4):
        expected = random_crop_flip(to_float(raw.clone()), padding, torch.Generator().manual_seed(3))
        off, flip = _draws(len(raw), padding, torch.Generator().manual_seed(3))
        assert torch.equal(_crop_flip_gather(raw, off, flip, padding), expected)


# -- the paper's transforms: Resize(460) -> RandomCrop(448, padding 8) + flip / CenterCrop(448) --------

def test_paper_sizes_scale_with_the_input_size():
    from fairbench.pipeline import decode_size, default_padding

    # the authors' numbers at 448 px, and the issue's 224 -> 230 (460 / 448 exactly)
    assert (decode_size(448, "paper"), default_padding(448, "paper")) == (460, 8)
    assert (decode_size(224, "paper"), default_padding(224, "paper")) == (230, 4)
    # the built-in benchmark's transform decodes at the input size, as before
    assert (decode_size(64, "frame"), default_padding(64, "frame")) == (64, 2)
    assert decode_size(448, None) == 448  # records made before train.transform


@pytest.mark.parametrize("size", [112, 100])
def test_paper_random_crop_equals_torchvision_with_the_same_parameters(size):
    from fairbench.pipeline import augment_uint8, decode_size, default_padding

    full, padding = decode_size(size, "paper"), default_padding(size, "paper")
    assert full > size
    raw = positional(64, full, full, seed=size)
    out = random_crop_flip(to_float(raw), padding, torch.Generator().manual_seed(4), size=size)
    assert out.shape == (64, 3, size, size) and out.is_contiguous(memory_format=torch.channels_last)
    top, left, flipped = crop_params(out, padding)
    span = full + 2 * padding - size  # torchvision: top in [0, h + 2p - th]
    assert ((top >= 0) & (top <= span) & (left >= 0) & (left <= span)).all()
    for i in range(len(raw)):
        chw = TF.pad(raw[i].permute(2, 0, 1), [padding], fill=0)
        chw = TF.crop(chw, int(top[i]), int(left[i]), size, size)
        if flipped[i]:
            chw = TF.hflip(chw)
        assert torch.equal(out[i], TF.normalize(chw.float().div(255), [0.5] * 3, [0.5] * 3)), f"sample {i}"
    # the fused CPU path and the accelerator gather path give the same batch
    assert torch.equal(augment_uint8(raw, padding, torch.Generator().manual_seed(4), size=size), out)
    from fairbench.pipeline import _crop_flip_gather, _draws

    off, flip = _draws(len(raw), padding, torch.Generator().manual_seed(4), (span, span))
    assert torch.equal(_crop_flip_gather(raw, off, flip, padding, (size, size)), out)


def test_paper_random_crop_reaches_every_offset():
    from fairbench.pipeline import decode_size, default_padding

    size = 64
    full, padding = decode_size(size, "paper"), default_padding(size, "paper")
    out = random_crop_flip(to_float(positional(3000, full, full)), padding, torch.Generator().manual_seed(5), size=size)
    top, left, _ = crop_params(out, padding)
    span = full + 2 * padding - size
    for offsets in (top, left):
        assert set(offsets.tolist()) == set(range(span + 1))


@pytest.mark.parametrize("full,size", [(460, 448), (230, 224), (45, 44), (66, 64)])
def test_center_crop_view_is_torchvisions_center_crop_without_a_copy(full, size):
    from fairbench.pipeline import center_crop_view

    images = np.random.default_rng(full).integers(0, 256, (3, full, full, 3), dtype=np.uint8)
    view = center_crop_view(images, size)
    assert view.shape == (3, size, size, 3) and np.shares_memory(view, images)
    for i in range(3):
        expected = TF.center_crop(torch.from_numpy(images[i]).permute(2, 0, 1), [size, size])
        assert torch.equal(torch.from_numpy(np.ascontiguousarray(view[i])).permute(2, 0, 1), expected)
    assert center_crop_view(view, size) is view  # already the size: unchanged
    with pytest.raises(ValueError, match="cannot be centre-cropped"):
        center_crop_view(images, full + 1)


def test_profiles_pick_their_transform_and_precision():
    from tests.conftest import tiny_config

    synth = tiny_config("erm")
    assert (synth.train.transform, synth.train.amp, synth.train.crop_padding) == ("frame", True, 1)
    from fairbench.config import build_config, resolve

    paper = resolve(build_config(None, {"method": "fineface", "data.name": "fairface"}))
    assert (paper.train.transform, paper.train.amp, paper.train.crop_padding) == ("paper", False, 8)
    assert paper.data.image_size == 448


def test_a_run_with_the_paper_transform_trains_on_crops_and_evaluates_on_the_centre(run_tiny, monkeypatch):
    """Decoded at 33 px (32 * 460 / 448), the method sees 32 px inputs in training and evaluation."""
    from fairbench.methods.erm import ERM

    seen: set[tuple[str, tuple[int, ...]]] = set()
    update, predict = ERM.update, ERM.predict
    monkeypatch.setattr(ERM, "update", lambda self, b: seen.add(("train", tuple(b.x.shape[1:]))) or update(self, b))
    monkeypatch.setattr(ERM, "predict", lambda self, x: seen.add(("eval", tuple(x.shape[1:]))) or predict(self, x))
    path = run_tiny("erm", **{"train.transform": "paper"})
    assert seen == {("train", (3, 32, 32)), ("eval", (3, 32, 32))}
    dataset = json.loads((path / "dataset.json").read_text())
    assert dataset["info"]["image_size"] == 33
