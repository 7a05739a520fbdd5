"""Batched class-activation maps and attention crops for FineFACE.

What it reproduces: docs/specs-notes.md, "FineFACE" (the class activation map and the attention
crop). The authors loop over the batch in Python; here everything is batched, with no host
synchronisation, so it can run asynchronously on an accelerator (the per-sample reference it is
tested against: ``tests/methods/test_fineface_attention.py``). Pure torch; nothing from the rest of
fairbench is imported. Box rules (``"authors"``, ``"spec"``) and crop paths (``"exact"``,
``"grid_sample"``): docs/methods.md#attention-maps-and-crops
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "expert_cams",
    "normalised_map",
    "overall_map",
    "attention_boxes",
    "crop_and_resize",
    "attention_crops",
    "CROP_METHODS",
]

_EPS = 1e-6  # the authors' min-max epsilon
_RULES = ("spec", "authors")


def expert_cams(feature_map: Tensor, fc1_weight: Tensor, fc2_weight: Tensor, logits: Tensor) -> Tensor:
    """Class activation maps of one expert, ``B x h x w``.

    ``cam[b] = (fc2_weight[k_b] @ fc1_weight) . feature_map[b]`` over channels, with
    ``k_b = argmax(logits[b])`` (this expert's own prediction). BN1d layers, biases and
    the ELU of the head are ignored, as in the authors' ``map_generate``. The authors
    multiply ``W1 @ F`` first (512 x h*w per sample); contracting the two weight matrices
    first gives the same bilinear form (up to float rounding) at a fraction of the cost.

    Inputs are detached (the maps only select crops; no gradient flows through them).
    Computed in at least float32 (bfloat16 feature maps are upcast); returns that dtype.
    """
    if feature_map.dim() != 4:
        raise ValueError(f"feature_map must be B x C x h x w, got {tuple(feature_map.shape)}")
    dtype = torch.promote_types(torch.promote_types(feature_map.dtype, fc1_weight.dtype), torch.float32)
    fmap = feature_map.detach().to(dtype)
    w1 = fc1_weight.detach().to(device=fmap.device, dtype=dtype)  # 512 x C
    w2 = fc2_weight.detach().to(device=fmap.device, dtype=dtype)  # K x 512
    k = logits.detach().argmax(dim=1).to(fmap.device)  # B, stays on device
    cls_w = w2.index_select(0, k) @ w1  # B x C: per-sample class weight through both Linears
    return torch.einsum("bc,bchw->bhw", cls_w, fmap)


def _minmax(m: Tensor) -> Tensor:
    """Per-sample ``(m - min) / (max - min + 1e-6)`` over the last two dims."""
    lo = m.amin(dim=(-2, -1), keepdim=True)
    hi = m.amax(dim=(-2, -1), keepdim=True)
    return (m - lo) / (hi - lo + _EPS)


def normalised_map(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Upsample ``B x h x w`` CAMs to ``size`` (bilinear, align_corners=True) and min-max
    normalise each sample. Returns float32 (float64 if given float64), ``B x H x W``.

    ``F.interpolate`` treats every (sample, channel) plane independently with the same
    kernel, so the batched call gives the same values as one call per sample.
    """
    if cam.dim() != 3:
        raise ValueError(f"cam must be B x h x w, got {tuple(cam.shape)}")
    dtype = torch.promote_types(cam.dtype, torch.float32)
    up = F.interpolate(cam.to(dtype).unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=True)
    return _minmax(up.squeeze(1))


def overall_map(maps: list[Tensor]) -> Tensor:
    """Overall attention map A_oval: sum of the normalised maps, min-max normalised again."""
    if len(maps) == 0:
        raise ValueError("overall_map needs at least one map")
    total = maps[0]
    for m in maps[1:]:  # loop over experts (N), not over samples
        total = total + m
    return _minmax(total)


@functools.lru_cache(maxsize=64)
def _authors_table_host(n: int, pad: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # The authors' expressions evaluated in Python for every possible first / last index,
    # so the batched lookup reproduces their double-precision int() truncation exactly
    # (e.g. 0.7 * 90 == 62.99999999999999 but int(2 + 62.99999999999999) == 65, one more
    # than 2 + floor(pad)) without re-deriving it in tensor arithmetic.
    start = tuple(max(int(i - pad), 0) for i in range(n))
    end = tuple(min(int(i + pad), n) for i in range(n))
    return start, end


_DEVICE_TABLES: dict[tuple[int, float, str], tuple[Tensor, Tensor]] = {}


def _authors_table(n: int, pad: float, device: torch.device) -> tuple[Tensor, Tensor]:
    # Built once per (size, pad, device): a one-off host-to-device copy, never a
    # device-to-host sync; later calls reuse the cached device tensors.
    key = (n, pad, str(device))
    if key not in _DEVICE_TABLES:
        start, end = _authors_table_host(n, pad)
        _DEVICE_TABLES[key] = (
            torch.tensor(start, dtype=torch.long, device=device),
            torch.tensor(end, dtype=torch.long, device=device),
        )
    return _DEVICE_TABLES[key]


def _span(hit: Tensor, n: int, pad_ratio: float, rule: str) -> tuple[Tensor, Tensor]:
    """Start/end (end exclusive) along one axis from a ``B x n`` bool "any hit" vector."""
    idx = torch.arange(n, device=hit.device)
    # First / last hit as a masked min / max over the index: exact integer reductions,
    # no reliance on argmax tie-breaking. No hit -> first = n, last = -1 (sentinels).
    first = torch.where(hit, idx, n).amin(dim=1)
    last = torch.where(hit, idx, -1).amax(dim=1)
    empty = first > last  # only when the mask is empty (e.g. a constant or NaN map)
    first = first.clamp(max=n - 1)  # keep the sentinels valid as table indices
    last = last.clamp(min=0)
    if rule == "spec":
        pad = int(pad_ratio * n)
        start = (first - pad).clamp(min=0)
        end = (last + 1 + pad).clamp(max=n)
    else:
        start_tab, end_tab = _authors_table(n, pad_ratio * n, hit.device)
        start = start_tab[first]
        # The authors' end is last + int(pad); at pad 0 the slice would be empty (their code
        # crashes): keep at least one pixel.
        end = torch.maximum(end_tab[last], start + 1)
    start = torch.where(empty, 0, start)
    end = torch.where(empty, n, end)
    return start, end


def attention_boxes(maps: Tensor, threshold: float = 0.5, pad_ratio: float = 0.1, rule: str = "authors") -> Tensor:
    """Bounding boxes of ``maps >= threshold``: LongTensor ``B x 4`` = (y0, y1, x0, x1),
    end exclusive, padded and clamped to the image (see the module docstring for
    ``rule``). An empty mask (NaN map, or threshold above the map's range) gives the whole
    image. The row extent of a 2-D mask is the extent of its "any over columns" vector
    (and vice versa), so two 1-D reductions give exactly the box of the 2-D mask.
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be B x H x W, got {tuple(maps.shape)}")
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    _, h, w = maps.shape
    mask = maps >= threshold  # NaN compares False
    y0, y1 = _span(mask.any(dim=2), h, pad_ratio, rule)
    x0, x1 = _span(mask.any(dim=1), w, pad_ratio, rule)
    return torch.stack((y0, y1, x0, x1), dim=1)


CROP_METHODS = ("exact", "grid_sample")


def _axis_taps(start: Tensor, end: Tensor, out: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source pixels and weights along one axis, ``B x out`` each: ``(i0, i1, w0, w1)``.

    What ``F.interpolate(align_corners=True)`` computes for a slice of length
    ``L = end - start`` resized to ``out`` samples (ATen's ``compute_source_index_and_lambda``),
    in the sampling dtype: ``scale = float(L - 1) / (out - 1)`` (0 when ``out == 1``),
    ``real = scale * j``, ``i0 = min(floor(real), L - 1)``, ``w1 = clamp(real - i0, 0, 1)``,
    ``w0 = 1 - w1``, ``i1 = i0 + (i0 < L - 1)``; an axis whose length already equals ``out``
    is copied (``i0 = i1 = j``, ``w = (1, 0)``). Indices are returned in image coordinates.
    """
    length = (end - start).unsqueeze(1)  # B x 1
    j = torch.arange(out, device=start.device)
    scale = (length - 1).to(dtype) / (out - 1) if out > 1 else torch.zeros(length.shape, dtype=dtype, device=start.device)
    real = scale * j.to(dtype)  # B x out
    i0 = torch.minimum(real.floor().long(), length - 1)
    w1 = (real - i0.to(dtype)).clamp(0, 1)
    i1 = i0 + (i0 < length - 1).long()
    copy = length == out
    i0 = torch.where(copy, j, i0)
    i1 = torch.where(copy, j, i1)
    w1 = torch.where(copy, torch.zeros((), dtype=dtype, device=start.device), w1)
    start = start.unsqueeze(1)
    return i0 + start, i1 + start, 1 - w1, w1


def _blend(a: Tensor, b: Tensor, wa: Tensor, wb: Tensor) -> Tensor:
    # ``a * wa + b * wb`` as ATen's CPU kernel evaluates it: fma(a, wa, b * wb). addcmul is the
    # same fused multiply-add on the CPU; the equality is pinned by a test against interpolate.
    return torch.addcmul(b * wb, a, wa)


def _crop_exact(images: Tensor, boxes: Tensor, out_h: int, out_w: int) -> Tensor:
    """Batched slice + ``F.interpolate(bilinear, align_corners=True)``: the same source pixels,
    weights and order of operations as the per-sample call (see ``crop_and_resize`` for where
    that is bit for bit). Separable, as ATen evaluates it: ``(x00 w0 + x01 w1) v0 + (x10 w0 +
    x11 w1) v1``. Every source row is blended along x once (a source row's blend does not depend
    on the output row that reads it), then the two rows of each output row along y."""
    b, c, h, w = images.shape
    y0, y1, x0, x1 = boxes.unbind(dim=1)
    dtype = images.dtype
    ry0, ry1, wy0, wy1 = _axis_taps(y0, y1, out_h, dtype)
    rx0, rx1, wx0, wx1 = _axis_taps(x0, x1, out_w, dtype)
    rows = images.contiguous().view(b, c * h, w)
    col0 = rx0[:, None, :].expand(b, c * h, out_w)
    col1 = rx1[:, None, :].expand(b, c * h, out_w)
    along_x = _blend(rows.gather(2, col0), rows.gather(2, col1), wx0[:, None, :], wx1[:, None, :])
    flat = along_x.view(b * c * h, out_w)
    base = (torch.arange(b, device=images.device)[:, None, None] * (c * h)
            + torch.arange(c, device=images.device)[None, :, None] * h)  # B x C x 1: first row of each plane

    def pick(r: Tensor) -> Tensor:  # B x out_h source rows -> B x C x out_h x out_w
        return flat.index_select(0, (base + r[:, None, :]).reshape(-1)).view(b, c, out_h, out_w)

    return _blend(pick(ry0), pick(ry1), wy0[:, None, :, None], wy1[:, None, :, None])


def _axis_grid(start: Tensor, end: Tensor, full: int, out: int) -> Tensor:
    """Normalised (align_corners=True) sampling coordinates along one axis, ``B x out``,
    for the approximate ``grid_sample`` path.

    ``F.interpolate(align_corners=True)`` of a slice of length L = end - start to ``out``
    samples slice position ``j * (L - 1) / (out - 1)`` (position 0 when ``out == 1``;
    a zero step when ``L == 1``). That is image pixel ``start + j * (L - 1) / (out - 1)``,
    and ``grid_sample(align_corners=True)`` maps coordinate g to pixel
    ``(g + 1) / 2 * (full - 1)``. Positions stay within [start, end - 1], so grid_sample
    blends the same two pixels with nearly the same weights as interpolate does on the
    slice; the float32 image coordinate costs ~1e-5 of a pixel (even a whole-image box is
    not an exact identity).
    """
    # Computed in float64 where available, so the only rounding is the final cast to the
    # sampling dtype (grid_sample wants the grid in the input dtype); MPS has no float64.
    # Either way never in bfloat16: 8 mantissa bits would move samples by whole pixels.
    cdt = torch.float32 if start.device.type == "mps" else torch.float64
    j = torch.arange(out, device=start.device, dtype=cdt)
    length = (end - start).to(cdt).unsqueeze(1)  # B x 1
    step = (length - 1) / (out - 1) if out > 1 else torch.zeros_like(length)
    pos = start.to(cdt).unsqueeze(1) + j * step  # B x out, image pixel coordinates
    if full > 1:
        g = pos * (2.0 / (full - 1)) - 1.0
    else:  # a 1-pixel axis: every coordinate samples pixel 0
        g = torch.zeros_like(pos)
    return g


def _crop_grid_sample(images: Tensor, boxes: Tensor, out_h: int, out_w: int) -> Tensor:
    b, _, h, w = images.shape
    y0, y1, x0, x1 = boxes.unbind(dim=1)
    gy = _axis_grid(y0, y1, h, out_h).to(images.dtype)  # B x out_h
    gx = _axis_grid(x0, x1, w, out_w).to(images.dtype)  # B x out_w
    # The box is axis-aligned, so the grid is separable: x depends on the column only,
    # y on the row only (a per-sample affine grid with zero shear).
    grid = torch.stack(
        (gx.unsqueeze(1).expand(b, out_h, out_w), gy.unsqueeze(2).expand(b, out_h, out_w)), dim=-1
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def crop_and_resize(images: Tensor, boxes: Tensor, size: tuple[int, int] | None = None,
                    method: str = "exact") -> Tensor:
    """Crop ``images[b, :, y0:y1, x0:x1]`` and resize each crop to ``size`` (default: the
    input size) with bilinear ``align_corners=True`` interpolation, for the whole batch at
    once (no per-sample loop, no host sync).

    ``method``:

    * ``"exact"`` (default): the per-sample ``F.interpolate`` of the slice, batched: same
      pixels, same weights, same fused multiply-adds. A whole-image box returns the input
      unchanged. Bit-identical to the authors' slice + interpolate on the CPU in float32 when
      ATen splits the work over threads (2 or more intra-op threads, outputs of more than
      64 x 64 px per plane; tested at 65 to 448 px with 2 to 16 threads). On one thread, or
      for a smaller plane (one chunk), ATen runs another loop that associates the
      multiply-adds differently; there, as on CUDA and in float64, the two agree to ~1 ulp.
    * ``"grid_sample"``: one ``grid_sample`` over per-sample affine grids. Approximate: the
      sample positions are float32 image coordinates, off by up to 2 ulp of the coordinate
      (3e-5 px at 224 px, 6e-5 px at 448 px; tests/methods/test_fineface_reference.py), even for a
      whole-image box, so values move by that fraction of the neighbour difference.

    Sampling is done in float32 or float64 (bfloat16 / float16 inputs are upcast to float32,
    the result is cast back); ``padding_mode="border"`` (grid_sample) only matters for
    coordinates a rounding error past the last image pixel, where the neighbour's weight is ~0.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be B x C x H x W, got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must be {b} x 4, got {tuple(boxes.shape)}")
    if method not in CROP_METHODS:
        raise ValueError(f"method must be one of {CROP_METHODS}, got {method!r}")
    out_h, out_w = (h, w) if size is None else (int(size[0]), int(size[1]))
    boxes = boxes.to(images.device)
    work_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    work = images.to(work_dtype)
    if method == "exact":
        out = _crop_exact(work, boxes, out_h, out_w)
    else:
        out = _crop_grid_sample(work, boxes, out_h, out_w)
    return out.to(images.dtype)


def attention_crops(
    images: Tensor,
    maps: Tensor,
    threshold: float = 0.5,
    pad_ratio: float = 0.1,
    rule: str = "authors",
    method: str = "exact",
) -> tuple[Tensor, Tensor]:
    """Attention crops of ``images`` (B x C x H x W) from normalised ``maps`` (B x H x W).

    Returns ``(crops, boxes)``: crops B x C x H x W in the images' dtype, boxes LongTensor
    B x 4 (y0, y1, x0, x1), end exclusive.
    """
    if maps.dim() != 3 or images.dim() != 4 or maps.shape[0] != images.shape[0] or maps.shape[1:] != images.shape[2:]:
        raise ValueError(f"maps {tuple(maps.shape)} do not match images {tuple(images.shape)}")
    boxes = attention_boxes(maps, threshold=threshold, pad_ratio=pad_ratio, rule=rule)
    return crop_and_resize(images, boxes, method=method), boxes
