#!/usr/bin/env python
"""Write a small labelled face folder in the generic manifest format, to try the real-data path
(JPEG files decoded by the loader, a CSV of labels, splits) in a fresh clone without downloading
anything. The faces are the built-in benchmark's renderings saved as JPEG files.

    python examples/make_face_folder.py /tmp/faces            # 3,000 JPEGs + /tmp/faces/manifest.csv
    fairbench run erm --dataset manifest --data-root /tmp/faces \\
        --target smiling --protected skin_tone,presentation \\
        --backbone resnet_tiny --set backbone.pretrained=false --image-size 64

The manifest (``path,split,smiling,eyeglasses,skin_tone,presentation``) is the format to copy for
your own images: one row per image, paths relative to the folder, any label columns.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fairbench.data.synthface import SynthFaceOptions, attributes_frame, render_all, sample_split


def make_face_folder(out: Path, n_train: int = 2000, n_val: int = 500, n_test: int = 500, size: int = 112,
                     seed: int = 0) -> Path:
    """Render the splits into ``out/images/<split>/<i>.jpg`` and write ``out/manifest.csv``."""
    import pandas as pd

    options = SynthFaceOptions(seed=seed, n_train=max(n_train, 16), n_val=max(n_val, 16), n_test=max(n_test, 16))
    frames = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        lat = sample_split(split, n, "smiling", options)
        images = render_all(lat, size)
        labels = attributes_frame(lat)
        paths = [f"images/{split}/{i:05d}.jpg" for i in range(n)]
        for rel, pixels in zip(paths, images):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(pixels)).save(out / rel, "JPEG", quality=92)
        frames.append(pd.DataFrame({"path": paths, "split": split, "smiling": labels["smiling"],
                                    "eyeglasses": labels["eyeglasses"], "skin_tone": labels["skin_tone"],
                                    "presentation": labels["presentation"]}))
    manifest = out / "manifest.csv"
    pd.concat(frames, ignore_index=True).to_csv(manifest, index=False)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to create (or add to)")
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--size", type=int, default=112, help="image side in pixels (default 112)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    manifest = make_face_folder(args.out, args.train, args.val, args.test, args.size, args.seed)
    print(f"wrote {args.train + args.val + args.test} images and {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
