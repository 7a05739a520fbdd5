"""Prediction, the one home for it: logits of a method over uint8 images (split over the ranks of
a torchrun job), the per-sample predictions frame a run folder stores, and the metric report of
such a frame. Used by training (validation, test), cross-dataset evaluation and explanations.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from fairbench import distributed
from fairbench.compute import autocast
from fairbench.data.base import DataSplit
from fairbench.methods.base import Method
from fairbench.pipeline import BatchStream, eval_batches, to_float


def predict_images(method: Method, images: np.ndarray, batch_size: int, device: torch.device, amp: bool,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits N x K for uint8 images, in eval mode, without gradients.

    In a torchrun job every rank predicts a disjoint share of the batches and gets all the
    logits back, in dataset order."""
    method.eval()
    stream = BatchStream(images, device)
    batches = eval_batches(len(images), batch_size)
    procs = distributed.current()
    mine = range(procs.rank, len(batches), procs.world_size)
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode(), autocast(device, amp):
        for k, (_, raw) in zip(mine, stream([batches[k] for k in mine])):
            out[k] = method.predict(to_float(raw.to(device))).float().cpu().numpy()
            if progress:
                progress(len(raw))
    parts = distributed.gather_batches(out, len(batches)) if procs.active else [out[k] for k in range(len(batches))]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def predictions_frame(split: DataSplit, logits: np.ndarray, protected: tuple[str, ...], classes: list[str]) -> pd.DataFrame:
    scores = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    frame = pd.DataFrame({"index": np.arange(len(split)), "sample_id": split.sample_ids, "target": split.targets})
    frame["group"] = split.group_labels(protected)
    for col in protected:
        frame[col] = split.attributes[col].astype(str).to_numpy()
    for k in range(scores.shape[1]):
        frame[f"score_{k}"] = scores[:, k]
    frame["pred"] = logits.argmax(1)
    return frame


def report_for(frame: pd.DataFrame, group_order: list[str] | None = None) -> dict[str, Any]:
    """Every metric of a predictions frame; per-group entries in ``group_order`` (the dataset's)."""
    from fairbench.metrics import evaluate_predictions

    score_cols = [c for c in frame.columns if c.startswith("score_")]
    report = evaluate_predictions(
        frame["target"].to_numpy(), frame["pred"].to_numpy(), frame["group"].to_numpy(),
        scores=frame[score_cols].to_numpy() if score_cols else None,
    )
    if group_order:
        rank = {g: i for i, g in enumerate(group_order)}
        for key, value in report.items():
            if key.startswith("group_") and isinstance(value, dict):
                report[key] = dict(sorted(value.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    return report
