"""Tests for the batched FineFACE CAM / attention-crop code.

The oracle below is a straightforward per-sample port of the authors' public script
(``VCBSL-Fairness/FineFACE`` ``utils.py``: ``map_generate``, ``attention_im``,
``highlight_im``; Python loop over the batch, ``.item()``, slicing and one
``F.interpolate(align_corners=True)`` per crop). The batched code must reproduce it:
boxes exactly, pixels to float tolerance.

Box rules: ``"authors"`` (the default) is their formula verbatim, which the corrected spec
now states; ``"spec"`` is the spec's earlier wording (pad ``int(0.1 * H)`` around the
end-exclusive box), kept for the synthetic benchmark. Both oracles define the empty mask
(constant / NaN map; the authors' code raises there) as the whole image. Bit-for-bit checks
of the default ("exact") crops and of a whole training iteration are in
``test_fineface_reference.py``; the tolerances here hold for both crop methods.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fairbench.methods.fineface_attention import (
    attention_boxes,
    attention_crops,
    crop_and_resize,
    expert_cams,
    normalised_map,
    overall_map,
)

RULES = ("spec", "authors")

# --------------------------------------------------------------------------------------
# Per-sample oracle (authors' semantics)
# --------------------------------------------------------------------------------------


def ref_cams(fmap, logits, w1, w2):
    """authors' map_generate: (F^T W1^T) W2[k] per sample, k = argmax of this expert."""
    b_, c, h, w = fmap.shape
    out = torch.zeros(b_, h, w, dtype=fmap.dtype, device=fmap.device)
    for b in range(b_):
        m = fmap[b].reshape(c, h * w).permute(1, 0) @ w1.permute(1, 0)  # hw x 512
        k = logits[b].argmax().item()
        out[b] = (m @ w2[k].unsqueeze(1)).reshape(h, w)
    return out


def ref_norm(cam_b, size):
    """Upsample one h x w CAM (align_corners=True) and min-max normalise it."""
    m = F.interpolate(cam_b[None, None], size=size, mode="bilinear", align_corners=True)[0, 0]
    return (m - m.min()) / (m.max() - m.min() + 1e-6)


def ref_box(m, threshold=0.5, pad_ratio=0.1, rule="spec"):
    h, w = m.shape
    nz = torch.nonzero(m >= threshold, as_tuple=False)
    if nz.shape[0] == 0:  # authors' code raises here; both implementations: whole image
        return (0, h, 0, w)
    ymin, ymax = nz[:, 0].min().item(), nz[:, 0].max().item()
    xmin, xmax = nz[:, 1].min().item(), nz[:, 1].max().item()
    if rule == "spec":
        py, px = int(pad_ratio * h), int(pad_ratio * w)
        return (max(ymin - py, 0), min(ymax + 1 + py, h), max(xmin - px, 0), min(xmax + 1 + px, w))
    # authors, verbatim ...
    y0 = max(int(ymin - pad_ratio * h), 0)
    y1 = min(int(ymax + pad_ratio * h), h)
    x0 = max(int(xmin - pad_ratio * w), 0)
    x1 = min(int(xmax + pad_ratio * w), w)
    # ... plus the documented guard against their empty slice (only possible at pad 0)
    return (y0, max(y1, y0 + 1), x0, max(x1, x0 + 1))


def ref_crop(img, box, size):
    y0, y1, x0, x1 = box
    return F.interpolate(img[None, :, y0:y1, x0:x1], size=size, mode="bilinear", align_corners=True)[0]


def ref_crops_from_maps(images, maps, threshold=0.5, pad_ratio=0.1, rule="spec", size=None):
    size = tuple(images.shape[2:]) if size is None else size
    crops, boxes = [], []
    for b in range(images.shape[0]):
        box = ref_box(maps[b], threshold, pad_ratio, rule)
        boxes.append(box)
        crops.append(ref_crop(images[b], box, size))
    return torch.stack(crops), torch.tensor(boxes, dtype=torch.long)


def ref_attention_im(images, cams, rule="authors", theta=0.5, padding_ratio=0.1):
    """authors' attention_im (one expert's crop from its raw CAM), per sample."""
    out = images.clone()
    _, _, h, w = images.shape
    for b in range(images.shape[0]):
        m = ref_norm(cams[b].float(), (h, w))
        out[b] = ref_crop(images[b], ref_box(m, theta, padding_ratio, rule), (h, w))
    return out


def ref_overall_norm(cams_list, b, size):
    """authors' highlight_im map for sample b: sum of normalised maps, normalised again."""
    m = sum(ref_norm(c[b].float(), size) for c in cams_list)
    return (m - m.min()) / (m.max() - m.min() + 1e-6)


def ref_highlight_im(images, cams_list, rule="authors", theta=0.5, padding_ratio=0.1):
    out = images.clone()
    _, _, h, w = images.shape
    for b in range(images.shape[0]):
        m = ref_overall_norm(cams_list, b, (h, w))
        out[b] = ref_crop(images[b], ref_box(m, theta, padding_ratio, rule), (h, w))
    return out


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def smooth_images(b, h, w, gen, c=3, base=8):
    """Natural-image-like inputs in [-1, 1] (low frequency, like Normalize(0.5, 0.5))."""
    lo = torch.rand(b, c, base, base, generator=gen) * 2 - 1
    return F.interpolate(lo, size=(h, w), mode="bilinear", align_corners=True)


def noise_tol(h, w, images):
    """Tolerance for white-noise images. grid_sample resolves sample positions in float32
    image coordinates (a few ulp of max(H, W)) and interpolate in slice coordinates; the
    value error is (position error) x (neighbour difference), on each of the two axes."""
    ulp = torch.finfo(torch.float32).eps * max(h, w)
    span = (images.max() - images.min()).item()
    return 2 * 4 * ulp * span + 1e-6


def random_maps(b, h, w, gen, cam_size=(7, 7)):
    cams = torch.randn(b, *cam_size, generator=gen)
    return normalised_map(cams, (h, w))


def random_boxes(b, h, w, gen):
    y0 = torch.randint(0, h, (b,), generator=gen)
    x0 = torch.randint(0, w, (b,), generator=gen)
    y1 = y0 + 1 + (torch.rand(b, generator=gen) * (h - y0)).long().clamp(max=h - 1 - y0)
    x1 = x0 + 1 + (torch.rand(b, generator=gen) * (w - x0)).long().clamp(max=w - 1 - x0)
    boxes = torch.stack((y0, y1, x0, x1), 1)
    boxes[0] = torch.tensor([0, h, 0, w])  # whole image
    if b > 1:
        boxes[1] = torch.tensor([h // 2, h // 2 + 1, w // 3, w // 3 + 1])  # 1 x 1 crop
    if b > 2:
        boxes[2] = torch.tensor([0, h, w - 1, w])  # 1-pixel-wide column at the right border
    return boxes


# --------------------------------------------------------------------------------------
# CAMs, maps
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("k", [2, 5])
def test_expert_cams_matches_loop(dtype, tol, k):
    gen = torch.Generator().manual_seed(0)
    b, c, h, w = 4, 24, 6, 5
    fmap = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    w1 = torch.randn(16, c, generator=gen, dtype=dtype)
    w2 = torch.randn(k, 16, generator=gen, dtype=dtype)
    logits = torch.randn(b, k, generator=gen, dtype=dtype)
    got = expert_cams(fmap, w1, w2, logits)
    want = ref_cams(fmap, logits, w1, w2)
    assert got.shape == (b, h, w) and got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())


def test_expert_cams_uses_each_samples_own_class_and_detaches():
    b, c = 3, 4
    fmap = torch.ones(b, c, 2, 2)
    w1 = torch.eye(c)
    w2 = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 0]], requires_grad=True)
    logits = torch.tensor([[0.0, 0, 1], [1.0, 0, 0], [0.0, 1, 0]])
    got = expert_cams(fmap, w1, w2, logits)
    assert not got.requires_grad
    assert torch.equal(got[:, 0, 0], torch.tensor([3.0, 1.0, 2.0]))


def test_expert_cams_bfloat16_feature_map():
    gen = torch.Generator().manual_seed(1)
    fmap = torch.randn(3, 32, 4, 4, generator=gen).bfloat16()
    w1, w2 = torch.randn(8, 32, generator=gen), torch.randn(2, 8, generator=gen)
    logits = torch.randn(3, 2, generator=gen).bfloat16()
    got = expert_cams(fmap, w1, w2, logits)
    assert got.dtype == torch.float32
    want = ref_cams(fmap.float(), logits.float(), w1, w2)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("b", [1, 3, 8])
@pytest.mark.parametrize("cam_size,size", [((7, 7), (56, 56)), ((5, 9), (37, 61)), ((1, 4), (20, 12))])
def test_normalised_map_matches_per_sample(b, cam_size, size):
    gen = torch.Generator().manual_seed(b)
    cams = torch.randn(b, *cam_size, generator=gen)
    got = normalised_map(cams, size)
    assert got.shape == (b, *size)
    want = torch.stack([ref_norm(cams[i], size) for i in range(b)])
    # Same kernel per plane and the same elementwise ops: identical values, so the
    # thresholded masks (and the boxes) cannot differ between the two implementations.
    assert torch.equal(got, want)
    assert got.amin() >= 0 and got.amax() < 1


def test_overall_map_matches_authors():
    gen = torch.Generator().manual_seed(3)
    b, size = 5, (48, 40)
    cams = [torch.randn(b, s, s, generator=gen) for s in (12, 6, 3)]
    got = overall_map([normalised_map(c, size) for c in cams])
    want = torch.stack([ref_overall_norm(cams, i, size) for i in range(b)])
    assert torch.equal(got, want)


# --------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------


def check_boxes(maps, threshold=0.5, pad_ratio=0.1, rule="spec"):
    got = attention_boxes(maps, threshold, pad_ratio, rule=rule)
    want = torch.tensor([ref_box(m, threshold, pad_ratio, rule) for m in maps], dtype=torch.long)
    assert got.dtype == torch.long and got.shape == (maps.shape[0], 4)
    assert torch.equal(got, want), (got, want)
    return got


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("b", [1, 3, 8])
@pytest.mark.parametrize("hw", [(32, 32), (48, 40), (37, 61), (448, 448)])
def test_boxes_random_smooth_maps(rule, b, hw):
    gen = torch.Generator().manual_seed(b * 1000 + hw[0])
    check_boxes(random_maps(b, *hw, gen), rule=rule)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("threshold,pad_ratio", [(0.5, 0.1), (0.9, 0.1), (0.2, 0.25), (0.5, 0.0), (0.999, 0.13)])
def test_boxes_random_noise_maps(rule, threshold, pad_ratio):
    gen = torch.Generator().manual_seed(7)
    maps = torch.rand(6, 30, 50, generator=gen) ** 8  # sparse, scattered masks
    check_boxes(maps, threshold, pad_ratio, rule)


@pytest.mark.parametrize("rule", RULES)
def test_constant_and_nan_maps_give_whole_image(rule):
    h, w = 20, 30
    cams = torch.full((2, h, w), 3.0)  # at the input size, so the resize is exact
    maps = normalised_map(cams, (h, w))
    assert torch.equal(maps, torch.zeros(2, h, w))  # min-max of a constant map is 0
    nan_map = torch.full((1, h, w), float("nan"))
    boxes = check_boxes(torch.cat([maps, nan_map]), rule=rule)
    assert torch.equal(boxes, torch.tensor([[0, h, 0, w]] * 3))
    # An upsampled constant CAM is only constant up to rounding, and min-max then scales
    # that rounding noise by 1 / 1e-6 (authors' semantics, reproduced, not "fixed"):
    # whatever the mask is, both implementations must agree on it.
    for value in (1.0, 3.0, 300.0):
        check_boxes(normalised_map(torch.full((2, 5, 5), value), (h, w)), rule=rule)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("pad_ratio", [0.1, 0.0])
def test_single_hot_pixel_middle_and_corners(rule, pad_ratio):
    h, w = 40, 30
    where = [(20, 15), (0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
    maps = torch.zeros(len(where), h, w)
    for i, (y, x) in enumerate(where):
        maps[i, y, x] = 5.0
    maps = (maps - maps.amin((1, 2), keepdim=True)) / (maps.amax((1, 2), keepdim=True) + 1e-6)
    boxes = check_boxes(maps, pad_ratio=pad_ratio, rule=rule)
    if rule == "spec" and pad_ratio == 0.1:
        assert boxes.tolist() == [[16, 25, 12, 19], [0, 5, 0, 4], [0, 5, 26, 30], [35, 40, 0, 4], [35, 40, 26, 30]]
    if pad_ratio == 0.0:  # 1 x 1 box at the pixel, under both rules
        assert boxes.tolist() == [[y, y + 1, x, x + 1] for y, x in where]


@pytest.mark.parametrize("rule", RULES)
def test_box_touching_border_is_clamped(rule):
    h, w = 50, 60
    maps = torch.zeros(2, h, w)
    maps[0, 0:4, 50:60] = 1.0  # top-right corner region
    maps[1, 45:50, 0:60] = 1.0  # bottom band, full width
    boxes = check_boxes(maps, rule=rule)
    if rule == "spec":
        assert boxes.tolist() == [[0, 9, 44, 60], [40, 50, 0, 60]]
    else:  # authors: [int(min - 0.1 * H), int(max + 0.1 * H)), i.e. end one pixel earlier
        assert boxes.tolist() == [[0, 8, 44, 60], [40, 50, 0, 60]]


@pytest.mark.parametrize("rule", RULES)
def test_one_pixel_wide_box(rule):
    h, w = 24, 36
    maps = torch.zeros(1, h, w)
    maps[0, 5:19, 17] = 1.0
    boxes = check_boxes(maps, pad_ratio=0.0, rule=rule)
    assert boxes.tolist() == ([[5, 19, 17, 18]] if rule == "spec" else [[5, 18, 17, 18]])
    gen = torch.Generator().manual_seed(0)
    images = smooth_images(1, h, w, gen)
    crops, _ = attention_crops(images, maps, pad_ratio=0.0, rule=rule)
    want, _ = ref_crops_from_maps(images, maps, pad_ratio=0.0, rule=rule)
    torch.testing.assert_close(crops, want, rtol=0, atol=1e-5)
    # a 1-pixel-wide slice resizes to a constant along x
    assert torch.equal(crops, crops[..., :1].expand_as(crops))


def test_authors_rule_float_truncation_corner_case():
    # 0.7 * 90 == 62.99999999999999 in double and 2 + 62.99999999999999 rounds to 65.0, so
    # the authors' int(max + pad) is 65 where floor(pad) arithmetic would give 64. The
    # batched code follows Python's double arithmetic exactly (lookup table).
    h, w, pad_ratio = 90, 170, 0.7
    maps = torch.zeros(h, h, w)
    for m in range(h):
        maps[m, m, (m * w) // h] = 1.0
    boxes = check_boxes(maps, pad_ratio=pad_ratio, rule="authors")
    assert boxes[2, 1].item() == 65
    check_boxes(maps, pad_ratio=pad_ratio, rule="spec")


def test_rejects_unknown_rule():
    with pytest.raises(ValueError):
        attention_boxes(torch.rand(1, 4, 4), rule="paper")


# --------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "grid_sample"])
@pytest.mark.parametrize("b", [1, 3, 8])
@pytest.mark.parametrize("hw,size", [((32, 32), None), ((37, 61), None), ((40, 24), (17, 29)), ((30, 30), (1, 9)), ((1, 16), None)])
def test_crop_and_resize_matches_interpolate(b, hw, size, method):
    gen = torch.Generator().manual_seed(b + hw[0])
    h, w = hw
    boxes = random_boxes(b, h, w, gen)
    out_size = hw if size is None else size
    # smooth (natural-image-like) inputs: float tolerance 1e-5
    images = smooth_images(b, h, w, gen)
    got = crop_and_resize(images, boxes, size, method=method)
    want = torch.stack([ref_crop(images[i], boxes[i].tolist(), out_size) for i in range(b)])
    assert got.shape == (b, 3, *out_size) and got.dtype == images.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # white noise in [-1, 1]: same pixels, error bounded by float32 coordinate resolution
    noise = torch.rand(b, 3, h, w, generator=gen) * 2 - 1
    got = crop_and_resize(noise, boxes, size, method=method)
    want = torch.stack([ref_crop(noise[i], boxes[i].tolist(), out_size) for i in range(b)])
    torch.testing.assert_close(got, want, rtol=0, atol=noise_tol(h, w, noise))


def test_crop_samples_same_pixels_and_weights_at_448():
    # Alternating 0/1 columns (rows): the output is the interpolation weight of the
    # sampled neighbour pair, so agreeing to 1e-4 means both implementations blend the
    # same two pixels with the same weights (to 1e-4 px) everywhere, not just on average.
    gen = torch.Generator().manual_seed(5)
    b, h, w = 6, 448, 448
    boxes = random_boxes(b, h, w, gen)
    checker_x = (torch.arange(w) % 2).float().expand(b, 1, h, w)
    checker_y = (torch.arange(h) % 2).float()[:, None].expand(b, 1, h, w)
    for img in (checker_x.contiguous(), checker_y.contiguous()):
        got = crop_and_resize(img, boxes)
        want = torch.stack([ref_crop(img[i], boxes[i].tolist(), (h, w)) for i in range(b)])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_whole_image_box_is_identity():
    gen = torch.Generator().manual_seed(2)
    images = smooth_images(2, 33, 47, gen)
    boxes = torch.tensor([[0, 33, 0, 47]] * 2)
    assert torch.equal(crop_and_resize(images, boxes), images)  # exact: the input itself
    torch.testing.assert_close(crop_and_resize(images, boxes, method="grid_sample"), images, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("b,hw", [(1, (64, 64)), (4, (96, 80)), (6, (448, 448))])
def test_attention_crops_matches_authors_attention_im(rule, b, hw):
    gen = torch.Generator().manual_seed(b)
    h, w = hw
    images = smooth_images(b, h, w, gen)
    cams = torch.randn(b, h // 8, w // 8, generator=gen)
    maps = normalised_map(cams, hw)
    crops, boxes = attention_crops(images, maps, rule=rule)
    torch.testing.assert_close(crops, ref_attention_im(images, cams, rule=rule), rtol=0, atol=1e-5)
    want_crops, want_boxes = ref_crops_from_maps(images, maps, rule=rule)
    assert torch.equal(boxes, want_boxes)
    torch.testing.assert_close(crops, want_crops, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
def test_overall_crop_matches_authors_highlight_im(rule):
    gen = torch.Generator().manual_seed(11)
    b, h, w = 4, 112, 112
    images = smooth_images(b, h, w, gen)
    fmaps = [torch.randn(b, 16, s, s, generator=gen) for s in (14, 7, 4)]
    heads = [(torch.randn(8, 16, generator=gen), torch.randn(2, 8, generator=gen)) for _ in fmaps]
    logits = [torch.randn(b, 2, generator=gen) for _ in fmaps]
    cams = [expert_cams(f, w1, w2, lg) for f, (w1, w2), lg in zip(fmaps, heads, logits)]
    ref_cam_list = [ref_cams(f, lg, w1, w2) for f, (w1, w2), lg in zip(fmaps, heads, logits)]
    oval = overall_map([normalised_map(c, (h, w)) for c in cams])
    crops, _ = attention_crops(images, oval, rule=rule)
    # CAMs differ by float association (W2[k] W1 first vs W1 F first), which could in
    # principle flip a pixel sitting exactly on the threshold; these seeds do not.
    torch.testing.assert_close(crops, ref_highlight_im(images, ref_cam_list, rule=rule), rtol=0, atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("hw", [(64, 48), (448, 448)])
def test_bfloat16_images(rule, hw):
    gen = torch.Generator().manual_seed(4)
    (h, w) = hw
    b = 4 if h < 100 else 2
    images = smooth_images(b, h, w, gen).bfloat16()
    maps = random_maps(b, h, w, gen)
    crops, boxes = attention_crops(images, maps, rule=rule)
    assert crops.dtype == torch.bfloat16
    want, want_boxes = ref_crops_from_maps(images, maps, rule=rule)  # interpolate in bf16
    assert torch.equal(boxes, want_boxes)
    # both round a float32-accurate blend to bfloat16 (8 bits): at most ~1 bf16 ulp apart
    torch.testing.assert_close(crops.float(), want.float(), rtol=0, atol=2 ** -7)
    want32, _ = ref_crops_from_maps(images.float(), maps, rule=rule)
    torch.testing.assert_close(crops.float(), want32, rtol=0, atol=2 ** -8)


def test_deterministic():
    gen = torch.Generator().manual_seed(9)
    images = torch.rand(5, 3, 64, 64, generator=gen)
    maps = random_maps(5, 64, 64, gen)
    a = attention_crops(images, maps)
    b = attention_crops(images, maps)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_shape_validation():
    with pytest.raises(ValueError):
        attention_crops(torch.rand(2, 3, 8, 8), torch.rand(2, 8, 9))
    with pytest.raises(ValueError):
        crop_and_resize(torch.rand(2, 3, 8, 8), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="exact"):
        crop_and_resize(torch.rand(2, 3, 8, 8), torch.zeros(2, 4, dtype=torch.long), method="nearest")


# --------------------------------------------------------------------------------------
# No host synchronisation in the hot path
# --------------------------------------------------------------------------------------


def test_hot_path_has_no_host_sync(monkeypatch):
    gen = torch.Generator().manual_seed(12)
    b, h, w = 4, 64, 56
    images = torch.rand(b, 3, h, w, generator=gen).bfloat16()
    fmaps = [torch.randn(b, 16, s, s, generator=gen) for s in (8, 4, 2)]
    w1, w2 = torch.randn(8, 16, generator=gen), torch.randn(3, 8, generator=gen)
    logits = torch.randn(b, 3, generator=gen)

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in the hot path")

    for name in ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    monkeypatch.setattr(torch, "nonzero", forbidden)

    maps = [normalised_map(expert_cams(f, w1, w2, logits), (h, w)) for f in fmaps]
    oval = overall_map(maps)
    for rule in RULES:  # "authors" also builds its lookup table here (first use of h, w)
        for m in [*maps, oval]:
            crops, boxes = attention_crops(images, m, rule=rule)
        crop_and_resize(images, boxes, (17, 9))
    monkeypatch.undo()
    assert crops.shape == images.shape and torch.isfinite(crops.float()).all()


# --------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rule", RULES)
def test_cuda_matches_oracle_without_sync(dtype, rule):
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(13)
    b, h, w = 16, 448, 448
    images = smooth_images(b, h, w, gen).to(dev, dtype)
    fmaps = [torch.randn(b, 64, s, s, generator=gen).to(dev) for s in (56, 28, 14)]
    w1, w2 = torch.randn(32, 64, generator=gen).to(dev), torch.randn(2, 32, generator=gen).to(dev)
    logits = [torch.randn(b, 2, generator=gen).to(dev) for _ in fmaps]

    def run():
        maps = [normalised_map(expert_cams(f, w1, w2, lg), (h, w)) for f, lg in zip(fmaps, logits)]
        maps.append(overall_map(maps))
        return maps, [attention_crops(images, m, rule=rule) for m in maps]

    run()  # warm-up (lazy CUDA init, authors' lookup table upload)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        maps, outs = run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    tol = 1e-5 if dtype == torch.float32 else 2 ** -7
    for m, (crops, boxes) in zip(maps, outs):
        # oracle on the same device, from the same maps
        want, want_boxes = ref_crops_from_maps(images, m, rule=rule)
        assert torch.equal(boxes.cpu(), want_boxes)
        torch.testing.assert_close(crops.float(), want.float(), rtol=0, atol=tol)
        # and the CPU oracle from the same maps (device-independent semantics)
        want_cpu, want_boxes_cpu = ref_crops_from_maps(images.cpu(), m.cpu(), rule=rule)
        assert torch.equal(boxes.cpu(), want_boxes_cpu)
        torch.testing.assert_close(crops.float().cpu(), want_cpu.float(), rtol=0, atol=tol)
    # CAMs on the device vs the per-sample loop
    cam = expert_cams(fmaps[0], w1, w2, logits[0])
    want = ref_cams(fmaps[0], logits[0], w1, w2)
    torch.testing.assert_close(cam, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
