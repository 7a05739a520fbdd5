"""Batches from decoded uint8 images, augmented on the device.

Images are decoded once (by the dataset, into memory or a memory-mapped cache); each batch
is gathered as uint8, moved to the device and augmented there as a whole: random crop with
zero padding (the paper's RandomCrop(padding)), horizontal flip, normalisation to
mean 0.5 / std 0.5. Evaluation applies only the normalisation.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import torch

MEAN, STD = 0.5, 0.5


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """B x H x W x 3 uint8 -> B x 3 x H x W float, normalised (channels_last memory layout)."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop (after zero padding, in normalised space pad = -1 = black) and flip."""
    b, c, h, w = x.shape
    device = x.device
    if padding > 0:
        # Pad with the normalised value of a black pixel, as RandomCrop(padding) pads the PIL image with 0.
        padded = torch.nn.functional.pad(x, (padding,) * 4, value=(0.0 - MEAN) / STD)
        off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device="cpu").to(device)
        rows = (torch.arange(h, device=device)[None, :] + off[0][:, None])  # B x H
        cols = (torch.arange(w, device=device)[None, :] + off[1][:, None])  # B x W
        idx_b = torch.arange(b, device=device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator, device="cpu").to(device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=torch.channels_last)


# uint8 value -> normalised float, for the fused CPU path
_LUT = ((np.arange(256, dtype=np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def _draws(b: int, padding: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The random offsets (2 x B, in [0, 2p]) and flips, drawn in random_crop_flip's order."""
    off = (torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device="cpu") if padding > 0
           else torch.zeros((2, b), dtype=torch.int64))
    flip = torch.rand(b, generator=generator, device="cpu") < 0.5
    return off, flip


def augment_uint8(raw: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exactly ``random_crop_flip(to_float(raw), padding, generator)``, but faster.

    Cropping and flipping commute with the per-pixel normalisation, so they run on the uint8
    batch: on the CPU fused with the normalisation in one pass per image (a slice copy through
    a 256-entry lookup table), on an accelerator as one uint8 gather before ``to_float``.
    """
    b, h, w, _ = raw.shape
    off, flip = _draws(b, padding, generator)
    if raw.device.type != "cpu":
        return _crop_flip_gather(raw, off, flip, padding)
    src = raw.numpy()
    dst = np.full((b, h, w, 3), _LUT[0], np.float32) if padding > 0 else np.empty((b, h, w, 3), np.float32)
    shifts = (off - padding).tolist()
    for i, (dy, dx, flipped) in enumerate(zip(shifts[0], shifts[1], flip.tolist())):
        y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        if y0 >= y1 or x0 >= x1:
            continue  # crop entirely in the padding: stays black
        patch = src[i, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        if flipped:
            np.take(_LUT, patch[:, ::-1], out=dst[i, y0:y1, w - x1 : w - x0])
        else:
            np.take(_LUT, patch, out=dst[i, y0:y1, x0:x1])
    # N x H x W x C memory viewed as N x C x H x W is exactly the channels_last layout.
    return torch.from_numpy(dst).permute(0, 3, 1, 2)


def _crop_flip_gather(raw: torch.Tensor, off: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """Accelerator path of augment_uint8: one uint8 gather from the zero-padded batch, flip folded in."""
    b, h, w, _ = raw.shape
    dev = raw.device
    padded = torch.nn.functional.pad(raw, (0, 0, padding, padding, padding, padding)) if padding else raw
    off, flip = off.to(dev), flip.to(dev)
    cols = torch.arange(w, device=dev)[None, :].expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + off[1][:, None]
    rows = torch.arange(h, device=dev)[None, :] + off[0][:, None]
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
