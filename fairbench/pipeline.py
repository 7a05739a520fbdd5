"""Batches from decoded uint8 images, augmented on the device.

Images are decoded once (by the dataset, into memory or a memory-mapped cache); each batch is
gathered as uint8, moved to the device and augmented there as a whole (random crop with zero
padding, horizontal flip, normalisation to mean 0.5 / std 0.5). ``train.transform`` picks the
authors' ``"paper"`` transform (decoded at 460/448 of the input size, centre crop at evaluation)
or ``"frame"`` (the whole frame, the built-in benchmark's).
Details: docs/configuration.md#transforms
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import torch

MEAN, STD = 0.5, 0.5
#: the authors' Resize(460) -> RandomCrop(448, padding=8) / CenterCrop(448), relative to the crop
PAPER_RESIZE, PAPER_CROP, PAPER_PADDING = 460, 448, 8
TRANSFORMS = ("paper", "frame")


def decode_size(image_size: int, transform: str) -> int:
    """Side the images are decoded at: ``image_size`` scaled by 460/448 for "paper" (448 -> 460,
    224 -> 230), ``image_size`` itself for "frame"."""
    return round(image_size * PAPER_RESIZE / PAPER_CROP) if transform == "paper" else image_size


def default_padding(image_size: int, transform: str) -> int:
    """Random-crop zero padding: the paper's 8 px at 448 scaled to the size ("paper"; 4 at 224),
    or image_size // 28 ("frame", the benchmark's choice); at least 1."""
    if transform == "paper":
        return max(1, round(image_size * PAPER_PADDING / PAPER_CROP))
    return max(1, image_size // 28)


def center_offset(full: int, size: int) -> int:
    """Top / left offset of torchvision's CenterCrop(size) in an image of side ``full``."""
    return int(round((full - size) / 2.0))


def center_crop_view(images: np.ndarray, size: int) -> np.ndarray:
    """N x H x W x C images -> their centre ``size`` x ``size`` crops, as a view (no copy, so a
    memory-mapped cache stays on disk). Images already ``size`` px are returned as they are."""
    h, w = images.shape[1:3]
    if (h, w) == (size, size):
        return images
    if h < size or w < size:
        raise ValueError(f"images of {h} x {w} px cannot be centre-cropped to {size} px")
    top, left = center_offset(h, size), center_offset(w, size)
    return images[:, top : top + size, left : left + size]


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """B x H x W x 3 uint8 -> B x 3 x H x W float, normalised (channels_last memory layout)."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator | None = None,
                     size: int | None = None) -> torch.Tensor:
    """Per-sample random crop (after zero padding, in normalised space pad = -1 = black) and flip:
    torchvision's RandomCrop(size, padding) + RandomHorizontalFlip on the batch (``size``
    default: the input size). The reference the fast ``augment_uint8`` is tested against."""
    b, c, h, w = x.shape
    out_h, out_w = (h, w) if size is None else (size, size)
    device = x.device
    # torchvision's RandomCrop(size, padding): top in [0, h + 2p - size], left likewise, uniform
    off, flip = _draws(b, padding, generator, (h + 2 * padding - out_h, w + 2 * padding - out_w))
    off, flip = off.to(device), flip.to(device)
    if padding > 0 or (out_h, out_w) != (h, w):
        # Pad with the normalised value of a black pixel, as RandomCrop(padding) pads the PIL image with 0.
        padded = torch.nn.functional.pad(x, (padding,) * 4, value=(0.0 - MEAN) / STD)
        rows = (torch.arange(out_h, device=device)[None, :] + off[0][:, None])  # B x H
        cols = (torch.arange(out_w, device=device)[None, :] + off[1][:, None])  # B x W
        idx_b = torch.arange(b, device=device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=torch.channels_last)


# uint8 value -> normalised float, for the fused CPU path
_LUT = ((np.arange(256, dtype=np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def _draws(b: int, padding: int, generator: torch.Generator | None,
           spans: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The random offsets (2 x B: rows in [0, span_y], columns in [0, span_x]; span = decoded
    side + 2 padding - crop side, default 2 padding: crop = decoded size) and flips, drawn in
    random_crop_flip's order."""
    span_y, span_x = (2 * padding, 2 * padding) if spans is None else spans
    if span_y == span_x:
        off = (torch.randint(0, span_y + 1, (2, b), generator=generator, device="cpu") if span_y > 0
               else torch.zeros((2, b), dtype=torch.int64))
    else:
        off = torch.stack([torch.randint(0, s + 1, (b,), generator=generator, device="cpu") for s in (span_y, span_x)])
    flip = torch.rand(b, generator=generator, device="cpu") < 0.5
    return off, flip


def augment_uint8(raw: torch.Tensor, padding: int, generator: torch.Generator | None = None,
                  rows_of: tuple[slice, int] | None = None, size: int | None = None) -> torch.Tensor:
    """Exactly ``random_crop_flip(to_float(raw), padding, generator, size)``, but faster.

    ``size``: the crop's side (default: the decoded side, i.e. the "frame" transform); with the
    "paper" transform the decoded images are larger and this is ``RandomCrop(size, padding)``.

    ``rows_of = (rows, n)``: ``raw`` is rows ``rows`` of a batch of ``n``; the draws are made for
    all n and these rows' applied (a process of a data-parallel run augments its shard as one
    process augments the whole batch).

    Cropping and flipping commute with the per-pixel normalisation, so they run on the uint8
    batch: on the CPU fused with the normalisation in one pass per image (a slice copy through
    a 256-entry lookup table), on an accelerator as one uint8 gather before ``to_float``.
    """
    b, h, w, _ = raw.shape
    out_h, out_w = (h, w) if size is None else (size, size)
    if out_h > h + 2 * padding or out_w > w + 2 * padding:
        raise ValueError(f"cannot crop {out_h} x {out_w} px from {h} x {w} px images padded by {padding}")
    spans = (h + 2 * padding - out_h, w + 2 * padding - out_w)
    off, flip = _draws(b if rows_of is None else rows_of[1], padding, generator, spans)
    if rows_of is not None:
        off, flip = off[:, rows_of[0]], flip[rows_of[0]]
    if raw.device.type != "cpu":
        return _crop_flip_gather(raw, off, flip, padding, (out_h, out_w))
    src = raw.numpy()
    dst = (np.full((b, out_h, out_w, 3), _LUT[0], np.float32) if padding > 0
           else np.empty((b, out_h, out_w, 3), np.float32))
    shifts = (off - padding).tolist()
    for i, (dy, dx, flipped) in enumerate(zip(shifts[0], shifts[1], flip.tolist())):
        # output pixel (y, x) is source pixel (y + dy, x + dx) where that lies in the image
        y0, y1, x0, x1 = max(0, -dy), min(out_h, h - dy), max(0, -dx), min(out_w, w - dx)
        if y0 >= y1 or x0 >= x1:
            continue  # crop entirely in the padding: stays black
        patch = src[i, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        if flipped:
            np.take(_LUT, patch[:, ::-1], out=dst[i, y0:y1, out_w - x1 : out_w - x0])
        else:
            np.take(_LUT, patch, out=dst[i, y0:y1, x0:x1])
    # N x H x W x C memory viewed as N x C x H x W is exactly the channels_last layout.
    return torch.from_numpy(dst).permute(0, 3, 1, 2)


def _crop_flip_gather(raw: torch.Tensor, off: torch.Tensor, flip: torch.Tensor, padding: int,
                      out: tuple[int, int] | None = None) -> torch.Tensor:
    """Accelerator path of augment_uint8: one uint8 gather from the zero-padded batch, flip folded in."""
    b = raw.shape[0]
    out_h, out_w = raw.shape[1:3] if out is None else out
    dev = raw.device
    padded = torch.nn.functional.pad(raw, (0, 0, padding, padding, padding, padding)) if padding else raw
    off, flip = off.to(dev), flip.to(dev)
    cols = torch.arange(out_w, device=dev)[None, :].expand(b, out_w)
    cols = torch.where(flip[:, None], out_w - 1 - cols, cols) + off[1][:, None]
    rows = torch.arange(out_h, device=dev)[None, :] + off[0][:, None]
    idx_b = torch.arange(b, device=dev)[:, None, None]
    return to_float(padded[idx_b, rows[:, :, None], cols[:, None, :]]).contiguous(memory_format=torch.channels_last)


class BatchStream:
    """Iterates index batches over an image array, assembling the next batch in a thread."""

    def __init__(self, images: np.ndarray, device: torch.device, prefetch: int = 2):
        self.images = images
        self.device = device
        self.prefetch = max(0, prefetch)

    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        # Sorted reads are much faster on a memory-mapped cache; restore the order after.
        order = np.argsort(idx, kind="stable")
        batch = np.empty((len(idx),) + self.images.shape[1:], dtype=np.uint8)
        batch[order] = self.images[idx[order]]
        tensor = torch.from_numpy(batch)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def __call__(self, batches: list[np.ndarray]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        if self.prefetch == 0:
            for idx in batches:
                yield idx, self._gather(idx)
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work():
            try:
                for idx in batches:
                    if stop.is_set():
                        return
                    q.put((idx, self._gather(idx)))
            except BaseException as exc:  # surfaced in the consumer
                q.put(exc)
                return
            q.put(None)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator, weights: np.ndarray | None = None,
                  drop_last: bool = True) -> list[np.ndarray]:
    """Shuffled index batches; with ``weights``, n draws with replacement proportional to them."""
    if weights is None:
        order = rng.permutation(n)
    else:
        p = np.asarray(weights, dtype=np.float64)
        if p.shape != (n,) or not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"sampling weights must be {n} finite non-negative numbers with a positive sum")
        order = rng.choice(n, size=n, replace=True, p=p / p.sum())
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def eval_batches(n: int, batch_size: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
