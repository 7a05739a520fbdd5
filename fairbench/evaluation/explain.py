"""``fairbench explain``: where a trained model looks, one row per face (FineFACE's figure 3).

Each row shows the input face, then every attention map the run's method exposes through
``Method.attention_maps`` (FineFACE: one map per expert and the overall map A_oval, with
the crop boxes drawn; ERM: its class activation map), then the same for a baseline run if
one is given. Maps are min-max normalised to [0, 1] per image and drawn as a jet overlay
on the face. Faces come from one of the run's splits (re-rendered / reloaded from the run's
configuration, a deterministic sample covering the demographic groups in turn) or from
image files (decoded and resized to the run's image size as the datasets do).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: overlay opacity of the attention maps
ALPHA = 0.5


@dataclass
class Faces:
    images: np.ndarray  # N x S x S x 3 uint8
    labels: list[str]  # one caption per face (group, true class) or the file name
    targets: np.ndarray | None = None  # true class ids, when known


@dataclass
class Panel:
    title: str
    maps: np.ndarray  # N x S x S in [0, 1]
    boxes: np.ndarray | None = None  # N x 4 (y0, y1, x0, x1), end exclusive, display pixels


@dataclass
class RunMaps:
    name: str  # e.g. "FineFACE" or "ERM"
    panels: list[Panel] = field(default_factory=list)
    predictions: np.ndarray | None = None  # N predicted class ids
    classes: list[str] | None = None


def sample_split(bundle, split: str, n: int, seed: int = 0) -> Faces:
    """``n`` faces of ``split``, taking the demographic groups in turn (dataset order), each
    group's faces in a seeded random order: the same faces on every call. Fewer faces than groups
    are spread evenly over the group order (4 of 8 skin tone x presentation groups: one per tone),
    so that a short figure still spans the groups whose gap it is meant to explain."""
    data = bundle.splits[split]
    groups = data.group_labels(bundle.task.protected)
    rng = np.random.default_rng(seed)
    order = [g for g in bundle.group_names if (groups == g).any()]
    if n < len(order):
        order = [order[i * len(order) // n] for i in range(n)]
    queues = {g: list(rng.permutation(np.flatnonzero(groups == g))) for g in order}
    picked: list[int] = []
    while len(picked) < min(n, len(data)):
        for g in order:
            if queues[g] and len(picked) < n:
                picked.append(int(queues[g].pop(0)))
    idx = np.asarray(picked, dtype=np.int64)
    labels = [f"{groups[i]}\ntrue: {bundle.classes[data.targets[i]]}" for i in idx]
    return Faces(np.asarray(data.images[idx]), labels, data.targets[idx])


def load_files(paths: list[Path], size: int) -> Faces:
    from fairbench.data.image_cache import decode_image

    images = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        images.append(decode_image(path, size))
    return Faces(np.stack(images), [Path(p).name for p in paths])


def _method_name(method_key: str) -> str:
    return {"fineface": "FineFACE", "erm": "ERM"}.get(method_key, method_key)


def compute_maps(method, cfg, faces: Faces, device: torch.device, display: int, name: str | None = None,
                 classes: list[str] | None = None) -> RunMaps:
    """Attention maps (and predictions) of a loaded method for the faces, at ``display`` px."""
    from fairbench.pipeline import center_crop_view, decode_size, to_float

    size = cfg.data.image_size
    images = faces.images
    if images.shape[1] == decode_size(size, cfg.train.transform) != size:
        images = center_crop_view(images, size)  # the run's evaluation transform ("paper")
    x = to_float(torch.from_numpy(np.ascontiguousarray(images)))
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.to(device)
    method.eval()
    with torch.no_grad():
        maps = method.attention_maps(x)
        logits = method.predict(x)
    if maps is None:
        raise ValueError(f"method {cfg.method!r} has no attention maps (Method.attention_maps returns None)")
    boxes = maps.get("boxes", {}) or {}
    scale = display / size
    out = RunMaps(name or _method_name(cfg.method), predictions=logits.float().argmax(1).cpu().numpy(), classes=classes)
    for title, m in maps.items():
        if title == "boxes":
            continue
        m = m.float()
        if m.shape[-1] != display:
            m = F.interpolate(m[:, None], size=(display, display), mode="bilinear", align_corners=True)[:, 0]
        box = boxes.get(title)
        if box is not None:
            box = (box.float().cpu() * scale).round().long().numpy()
        out.panels.append(Panel(title, m.clamp(0, 1).cpu().numpy(), box))
    return out


def render(faces: Faces, runs: list[RunMaps]) -> "Any":
    """A matplotlib figure: one row per face; input, then each run's panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns: list[tuple[RunMaps, Panel]] = [(run, panel) for run in runs for panel in run.panels]
    n_rows, n_cols = len(faces.images), 1 + len(columns)
    cell = 1.9
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + 0.9, cell * n_rows + 0.5), squeeze=False,
                             gridspec_kw={"wspace": 0.04, "hspace": 0.08})
    several = len(runs) > 1
    image = None
    for r in range(n_rows):
        face = faces.images[r]
        ax = axes[r, 0]
        ax.imshow(face)
        preds = [f"{run.name}: {run.classes[run.predictions[r]]}" for run in runs
                 if run.classes is not None and run.predictions is not None]
        caption = faces.labels[r] + ("\npred " + ", ".join(preds) if preds else "")
        ax.set_ylabel(caption, fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
        for c, (run, panel) in enumerate(columns, start=1):
            ax = axes[r, c]
            ax.imshow(face)
            image = ax.imshow(panel.maps[r], cmap="jet", alpha=ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
            if panel.boxes is not None:
                y0, y1, x0, x1 = (int(v) for v in panel.boxes[r])
                rect = Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.6)
                rect.set_path_effects([pe.Stroke(linewidth=2.8, foreground="black"), pe.Normal()])
                ax.add_patch(rect)
                # a box on the frame is invisible: say how much of the image the crop keeps
                h, w = panel.maps.shape[1:]
                area = (y1 - y0) * (x1 - x0) / (h * w)
                ax.text(0.03, 0.03, f"crop {area:.0%}", transform=ax.transAxes, fontsize=6.5, color="white",
                        path_effects=[pe.withStroke(linewidth=2, foreground="black")])
    titles = ["input"] + [f"{run.name}\n{panel.title}" if several or run.name else panel.title
                          for run, panel in columns]
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        bar = fig.colorbar(image, ax=axes[:, 1:].ravel().tolist(), fraction=0.02, pad=0.01)
        bar.set_label("attention (per image min-max)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return fig


def explain_run(run_dir: Path, output: Path, *, images: int = 6, image_files: list[Path] = (),
                baseline: Path | None = None, split: str = "test", data_root: Path | None = None,
                device: str = "auto", seed: int = 0, dpi: int = 150) -> Path:
    """Render the figure for ``run_dir`` (and ``baseline``) and write it atomically to ``output``."""
    from fairbench.compute import pick_device
    from fairbench.evaluation.run_data import load_bundle
    from fairbench.evaluation.trained_model import load_trained_method
    from fairbench.runs.store import atomic_write_bytes, read_json

    runs = [Path(run_dir)] + ([Path(baseline)] if baseline is not None else [])
    for path in runs:
        if not (path / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{path} has no checkpoint.pt: not a finished run folder")
    if images < 1 and not image_files:
        raise ValueError("--images must be at least 1")
    dev = pick_device(device)
    method, cfg = load_trained_method(runs[0], device=str(dev))
    display = cfg.data.image_size
    if image_files:
        faces = load_files(list(image_files), display)
    else:
        data_cfg = cfg.model_copy(deep=True)
        if data_root is not None:
            data_cfg.data.root = data_root
        faces = sample_split(load_bundle(data_cfg), split, images, seed)
    classes = read_json(runs[0] / "dataset.json")["classes"]
    results = [compute_maps(method, cfg, faces, dev, display, classes=classes)]
    if baseline is not None:
        base, base_cfg = load_trained_method(runs[1], device=str(dev))
        base_classes = read_json(runs[1] / "dataset.json")["classes"]
        name = _method_name(base_cfg.method)
        if name == results[0].name:
            name += " (baseline)"
        results.append(compute_maps(base, base_cfg, faces, dev, display, name=name, classes=base_classes))
    fig = render(faces, results)
    buffer = io.BytesIO()
    fmt = Path(output).suffix.lstrip(".").lower() or "png"
    fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(Path(output), buffer.getvalue())
    return Path(output)
