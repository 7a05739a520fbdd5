"""A matrix of bad input across the loaders, the configuration, suites, plugins and the run store.

Every case runs the ``fairbench`` command line on a runs folder that already holds a finished
run and asserts four things: the exact error text, exit code 2, that every file already in
the runs folder is byte for byte what it was, with nothing new left behind (the one case that
trains, NaN loss, leaves exactly one ``failed`` record), and that the image cache folder holds
exactly what it held (no checks after decoding; a split decoded before a later one failed is
removed again). Tiny fixtures: a few 32 px images, one epoch, the run store's cases on the
synthetic benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch

from fairbench.cli import build_parser, main

from tests.kit import corrupt_file, truncate_file
from tests.data.test_fairface import write_fairface
from tests.data.test_manifest import write_manifest

ROOT = Path(__file__).resolve().parents[2]

#: the finished run every case's runs folder starts with (and the run store's cases re-run)
SYNTH = ["run", "erm", "--image-size", "32", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--quiet",
         "--max-train-samples", "64", "--max-eval-samples", "64",
         "--set", "data.options={n_train = 128, n_val = 64, n_test = 64}", "--set", "train.workers=0"]


BAD_IMAGE_HINT = (" Fix or re-download the file, or leave such images out with --set data.options.on_bad_image=skip "
                  "(they are counted and listed in the run's dataset.json).")


def manifest_run(root: Path, cache: Path, *extra: str) -> list[str]:
    return ["run", "erm", "--dataset", "manifest", "--data-root", str(root), "--target", "smiling",
            "--protected", "gender", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
            "--backbone", "resnet_tiny", "--set", "backbone.pretrained=false", "--device", "cpu", "--quiet",
            "--set", f"data.cache_dir={cache}", "--set", "train.workers=0", *extra]


def fairface_run(root: Path, cache: Path) -> list[str]:
    return ["run", "erm", "--dataset", "fairface", "--data-root", str(root), "--image-size", "32", "--epochs", "1",
            "--batch-size", "4", "--backbone", "resnet_tiny", "--set", "backbone.pretrained=false", "--device", "cpu",
            "--quiet", "--set", f"data.cache_dir={cache}"]


def run_id_of(argv: list[str]) -> str:
    """The id ``fairbench run`` gives this command line (its data fingerprinted as it is now)."""
    from fairbench.cli import _overrides
    from fairbench.config import build_config, resolve, run_id
    from fairbench.data.run_fingerprint import with_fingerprint

    args = build_parser().parse_args(argv)
    return run_id(with_fingerprint(resolve(build_config(args.config, _overrides(args, args.method), args.sets))))


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hash)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class World:
    """One case's folders: ``runs`` (holding the finished run ``done``), data, cache."""

    tmp: Path
    runs: Path
    done: Path  # the finished synthetic run
    cache: Path
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def manifest(self, **kwargs) -> Path:
        root = self.tmp / "m"
        write_manifest(root, n=kwargs.pop("n", 30), **kwargs)
        return root

    def rewrite_manifest(self, root: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        path = root / "manifest.csv"
        change(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)

    def mount_tmpfs(self, size: str) -> Path:
        """A small tmpfs at a fresh folder (root only; the case is skipped where mounting is impossible)."""
        point = self.tmp / f"mnt{len(self.cleanup)}"
        point.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        self.cleanup.append(lambda: subprocess.run(["umount", "-l", str(point)], capture_output=True))
        return point

    def move_runs(self, new: Path) -> None:
        shutil.copytree(self.runs, new, symlinks=True)
        self.runs = new
        self.done = new / self.done.name


@dataclass
class Expect:
    argv: list[str]
    message: str  # the exact text after "fairbench <command>: error: "
    new_failed_run: bool = False  # the case trains and must leave one failed record
    env: dict[str, str] | None = None  # run in a subprocess with this environment
    # the case fails only after the built-in benchmark was rendered (a resume refused, a diverging or
    # full-disk run): it may add that rendering to the cache (rendered/, content-addressed and
    # verified on read: the next run reuses it), and must change nothing that was there
    renders: bool = False


# -- the cases: each builds its bad input in ``w`` and says what the command must print ------------

def image_truncated(w: World) -> Expect:
    root = w.manifest()
    truncate_file(root / "img" / "003.jpg")
    return Expect(manifest_run(root, w.cache),
                  f"cannot read image {root / 'img' / '003.jpg'} (manifest.csv line 5): OSError: image file is "
                  "truncated (83 bytes not processed)." + BAD_IMAGE_HINT)


def image_zero_bytes(w: World) -> Expect:
    root = w.manifest()
    (root / "img" / "004.jpg").write_bytes(b"")
    return Expect(manifest_run(root, w.cache), f"cannot read image {root / 'img' / '004.jpg'} (manifest.csv line 6): "
                  "the file is empty (0 bytes)." + BAD_IMAGE_HINT)


def image_wrong_format(w: World) -> Expect:
    root = w.manifest()
    corrupt_file(root / "img" / "000.jpg")
    return Expect(manifest_run(root, w.cache), f"cannot read image {root / 'img' / '000.jpg'} (manifest.csv line 2): "
                  "not an image in a format Pillow can read (UnidentifiedImageError)." + BAD_IMAGE_HINT)


def image_missing(w: World) -> Expect:
    root = w.manifest()
    (root / "img" / "007.jpg").unlink()
    return Expect(manifest_run(root, w.cache), f"cannot read image {root / 'img' / '007.jpg'} (manifest.csv line 9): "
                  "file is missing." + BAD_IMAGE_HINT)


def image_is_a_folder(w: World) -> Expect:
    root = w.manifest()
    (root / "img" / "009.jpg").unlink()
    (root / "img" / "009.jpg").mkdir()  # a test image: found before the training split is decoded
    return Expect(manifest_run(root, w.cache), f"cannot read image {root / 'img' / '009.jpg'} (manifest.csv line 11): "
                  "it is a folder, not an image file." + BAD_IMAGE_HINT)


def image_symlink_loop(w: World) -> Expect:
    root = w.manifest()
    (root / "img" / "014.jpg").unlink()
    (root / "img" / "014.jpg").symlink_to("014.jpg")
    return Expect(manifest_run(root, w.cache), f"cannot read image {root / 'img' / '014.jpg'} (manifest.csv line 16): "
                  "it is a symbolic link that leads back to itself (a loop), not an image file." + BAD_IMAGE_HINT)


def label_unknown(w: World) -> Expect:
    root = w.tmp / "ff"
    write_fairface(root, size=48)
    path = root / "fairface_label_train.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[3], "Martian")
    path.write_text("\n".join(lines) + "\n")
    return Expect(fairface_run(root, w.cache), f"fairface: {path} line 4: unknown race 'Martian'; expected one of "
                  "['White', 'Black', 'Latino_Hispanic', 'East Asian', 'Southeast Asian', 'Indian', 'Middle Eastern']")


def label_blank(w: World) -> Expect:
    root = w.manifest()
    w.rewrite_manifest(root, lambda f: f.assign(gender=["" if i == 2 else g for i, g in enumerate(f["gender"])]))
    return Expect(manifest_run(root, w.cache), "manifest-manifest: empty 'gender' value for img/002.jpg (manifest.csv "
                  "line 4); 1 row(s) have none. Every row needs a value in the task's columns.")


def header_wrong(w: World) -> Expect:
    root = w.tmp / "ff"
    write_fairface(root, size=48)
    path = root / "fairface_label_val.csv"
    path.write_text(path.read_text().replace("file,age,gender,race,service_test", "file,age,sex,race,service_test", 1))
    return Expect(fairface_run(root, w.cache), f"fairface: {path} line 1: header ['file', 'age', 'sex', 'race', "
                  "'service_test'] is not the official file,age,gender,race,service_test")


def csv_empty(w: World) -> Expect:
    root = w.tmp / "ff"
    write_fairface(root, size=48)
    path = root / "fairface_label_val.csv"
    path.write_text("")
    return Expect(fairface_run(root, w.cache), f"fairface: {path} is empty (no header, no rows); restore it from the "
                  "dataset's download (or re-export it from its source)")


def csv_not_utf8(w: World) -> Expect:
    root = w.tmp / "ff"
    write_fairface(root, size=48)
    path = root / "fairface_label_train.csv"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b".jpg", "_Müller.jpg".encode("latin-1"))  # a spreadsheet's Latin-1 export
    path.write_bytes(b"\n".join(lines))
    return Expect(fairface_run(root, w.cache), f"fairface: {path} line 4: byte 0xfc is not UTF-8 text; re-save the file "
                  "as UTF-8 (e.g. `iconv -f latin1 -t utf-8`, or 'CSV UTF-8' in a spreadsheet)")


def csv_nul_byte(w: World) -> Expect:
    root = w.manifest()
    path = root / "manifest.csv"
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6][:5] + b"\0" + lines[6][5:]
    path.write_bytes(b"\n".join(lines))
    return Expect(manifest_run(root, w.cache), f"manifest: {path} line 7: holds a NUL byte (0x00), which a text file "
                  "never does; remove it, or re-download / re-export the file (it may be damaged)")


def path_in_two_splits(w: World) -> Expect:
    root = w.manifest()
    w.rewrite_manifest(root, lambda f: pd.concat([f, f.iloc[[0]].assign(split="test")], ignore_index=True))
    return Expect(manifest_run(root, w.cache), f"manifest: {root / 'manifest.csv'}: img/000.jpg is in the 'train' split "
                  "(manifest.csv line 2) and in the 'test' split (manifest.csv line 32): it would be trained on and then "
                  "scored as a held-out image; list it in one split only")


def train_without_a_class(w: World) -> Expect:
    root = w.manifest()
    w.rewrite_manifest(root, lambda f: f.assign(smiling=f["smiling"].where(f["split"] != "train", "0")))
    return Expect(manifest_run(root, w.cache), "manifest-manifest: the 'train' split has no image of class '1' of the "
                  "target 'smiling'; a model cannot learn a class it never sees: add training images of it, or choose "
                  "another --target")


def group_without_train_samples(w: World) -> Expect:
    root = w.manifest()
    w.rewrite_manifest(root, lambda f: f[~((f["split"] == "train") & (f["gender"] == "Female"))])
    return Expect(manifest_run(root, w.cache), "manifest-manifest: group 'Female' has images in the 'val' split but none "
                  "in the 'train' split; no model is trained on it: add training images of it, or leave its val images "
                  "out")


def backbone_unknown(w: World) -> Expect:
    from fairbench import registry

    root = w.manifest()
    with pytest.raises(registry.RegistryError) as known:
        registry.backbones.get("resnet_tinyy")
    return Expect(manifest_run(root, w.cache, "--backbone", "resnet_tinyy"),
                  f"{known.value} Any timm model works as `timm/<model_name>`.")


def max_train_samples_zero(w: World) -> Expect:
    root = w.manifest()
    return Expect(manifest_run(root, w.cache, "--max-train-samples", "0"),
                  "run configuration: data.max_train_samples: Value error, must be positive (got 0)")


def fingerprint_set(w: World) -> Expect:
    return Expect([*SYNTH, "--runs-dir", str(w.runs), "--set", "data.fingerprint=0123456789abcdef"],
                  "data.fingerprint is computed from the data when a run starts, not set: drop --set "
                  "data.fingerprint=0123456789abcdef")


def split_empty(w: World) -> Expect:
    root = w.manifest()
    w.rewrite_manifest(root, lambda f: f.assign(split=f["split"].replace("test", "train")))
    return Expect(manifest_run(root, w.cache), "manifest-manifest: the 'test' split is empty (no rows of the label "
                  "files fall into it); check the files and the dataset options")


def rows_duplicated(w: World) -> Expect:
    root = w.manifest()
    w.rewrite_manifest(root, lambda f: pd.concat([f, f.iloc[[4]]], ignore_index=True))
    return Expect(manifest_run(root, w.cache), f"manifest: {root / 'manifest.csv'} (manifest.csv line 32): "
                  "img/004.jpg is listed twice (also manifest.csv line 6); list every image once")


def path_dotdot(w: World) -> Expect:
    root = w.manifest(escaping="../outside.jpg")
    return Expect(manifest_run(root, w.cache), f"manifest: {root / 'manifest.csv'} (manifest.csv line 32): path "
                  f"'../outside.jpg' contains '..'; paths must stay inside the data root {root}")


def path_absolute_outside(w: World) -> Expect:
    outside = w.tmp / "elsewhere.jpg"
    root = w.manifest(escaping=str(outside))
    return Expect(manifest_run(root, w.cache), f"manifest: {root / 'manifest.csv'} (manifest.csv line 32): path "
                  f"'{outside}' points outside the data root {root}; paths must be relative to the root (or "
                  "absolute inside it)")


def path_symlink_outside(w: World) -> Expect:
    root = w.manifest()
    outside = w.tmp / "secret.jpg"
    shutil.copy(root / "img" / "005.jpg", outside)
    (root / "img" / "005.jpg").unlink()
    (root / "img" / "005.jpg").symlink_to(outside)
    return Expect(manifest_run(root, w.cache), f"manifest-manifest: img/005.jpg (manifest.csv line 7) is a symbolic "
                  f"link to {outside}, outside the data root {root}; copy the file into the root (linked folders "
                  "are fine)")


def group_without_test_samples(w: World) -> Expect:
    root = w.manifest()
    w.rewrite_manifest(root, lambda f: f[~((f["split"] == "test") & (f["gender"] == "Female"))])
    return Expect(manifest_run(root, w.cache), "manifest-manifest: group 'Female' has training images but none in the "
                  "test split; its accuracy cannot be measured: add test images of it, or leave its training images out")


def group_without_test_samples_under_a_cap(w: World) -> Expect:
    """A sample cap did not remove the group (the split never had it): raising the cap cannot help."""
    expect = group_without_test_samples(w)
    return Expect([*expect.argv, "--max-eval-samples", "2"], expect.message)


def data_root_missing(w: World) -> Expect:
    root = w.tmp / "nowhere"
    return Expect(fairface_run(root, w.cache), "\n".join([
        "fairface: dataset files not found.",
        f"  looked in: --data-root {root}",
        f"    {root} does not exist",
        "  expected: [fairface_label_train.csv, fairface_label_val.csv]",
        "  get them from: https://github.com/joojs/fairface (the two label CSVs and fairface-img-margin025-trainval.zip "
        "or fairface-img-margin125-trainval.zip, unzipped beside them)",
        "  then point fairbench at them with --data-root /path/to/fairface (or data.root in a config file), or export "
        "FAIRBENCH_FAIRFACE_ROOT=/path/to/fairface."]))


def nan_loss(w: World) -> Expect:
    return Expect([*SYNTH, "--runs-dir", str(w.runs), "--set", "train.lr=1e30", "--set", "train.backbone_lr=1e30"],
                  "training diverged in epoch 1/1: loss is nan (learning rate 1e+30); lower it, e.g. "
                  "--set train.lr=1e+29", new_failed_run=True, renders=True)


def config_unknown_key(w: World) -> Expect:
    path = w.tmp / "run.toml"
    path.write_text('method = "erm"\n[train]\nepoch = 3\n')
    from fairbench.config import RunConfig, _valid_keys

    return Expect(["run", "erm", "--config", str(path), "--runs-dir", str(w.runs)],
                  f"unknown key 'train.epoch' in run configuration; valid keys: {', '.join(_valid_keys(RunConfig))}")


def config_not_toml(w: World) -> Expect:
    path = w.tmp / "run.toml"
    path.write_text("[train\nepochs = 3\n")
    return Expect(["run", "erm", "--config", str(path), "--runs-dir", str(w.runs)],
                  f"{path} is not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)")


def config_bad_value(w: World) -> Expect:
    return Expect(["run", "erm", "--runs-dir", str(w.runs), "--set", "train.epochs=0"],
                  "run configuration: train.epochs: Value error, must be positive (got 0)")


def config_unknown_method(w: World) -> Expect:
    from fairbench import registry

    return Expect(["run", "ermm", "--runs-dir", str(w.runs)], f"unknown method 'ermm'. Known: "
                  f"{', '.join(registry.methods.names())}. Did you mean: erm? See `fairbench list methods`.")


def config_unknown_dataset_option(w: World) -> Expect:
    from fairbench.data.synthface import SynthFaceOptions

    return Expect(["run", "erm", "--runs-dir", str(w.runs), "--set", "data.options.n_trian=10"],
                  f"unknown key 'n_trian' in options of dataset 'synthface'; valid keys: "
                  f"{', '.join(SynthFaceOptions.model_fields)}")


def suite_unknown_key(w: World) -> Expect:
    path = w.tmp / "bad-suite.toml"
    path.write_text('[suite]\nname = "bad"\nseeds = [0]\n[base]\nmethod = "erm"\n[grdi]\n"train.lr" = [0.1]\n')
    from fairbench.config import _valid_keys
    from fairbench.suites.suite import SuiteFile

    return Expect(["suite", "run", str(path), "--runs-dir", str(w.runs)], f"unknown key 'grdi' in suite {path}; "
                  f"valid keys: {', '.join(_valid_keys(SuiteFile))}")


def plugin_broken(w: World) -> Expect:
    site = w.tmp / "site"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fairbench.methods]\nbroken = broken_plugin_module\n")
    (site / "broken_plugin_module.py").write_text("import a_dependency_that_is_not_installed\n")
    return Expect(["run", "broken", "--runs-dir", str(w.runs)], "method 'broken' from distribution 'broken-plugin' "
                  "failed to import (broken_plugin_module): ModuleNotFoundError: No module named "
                  "'a_dependency_that_is_not_installed'", env={"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})


def status_corrupt(w: World) -> Expect:
    (w.done / "status.json").write_text('{"state": "do')
    return Expect([*SYNTH, "--runs-dir", str(w.runs)], f"{w.done / 'status.json'} is unreadable, so whether the run "
                  "finished is unknown; fix or remove that file, or pass --force to train it again (the folder is kept "
                  "until the new run has finished)")


def metrics_corrupt(w: World) -> Expect:
    (w.done / "metrics.json").write_text("")
    return Expect([*SYNTH, "--runs-dir", str(w.runs)], f"{w.done / 'metrics.json'} is unreadable (Expecting value: "
                  "line 1 column 1 (char 0)); the run must be trained again: run its command with --force")


def _as_interrupted(w: World) -> None:
    """The finished run turned back into one interrupted after its first epoch."""
    status = json.loads((w.done / "status.json").read_text())
    (w.done / "status.json").write_text(json.dumps({**status, "state": "incomplete", "reason": "interrupted"}))
    for name in ("metrics.json", "predictions_test.csv"):
        (w.done / name).unlink()


class _Payload:
    """Pickled, this would call a function on load; weights_only=True must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


def checkpoint_tampered(w: World) -> Expect:
    _as_interrupted(w)
    torch.save({"model": {}, "epoch": 0, "payload": _Payload()}, w.done / "last.pt")
    return Expect([*SYNTH, "--runs-dir", str(w.runs)], f"refusing to resume from {w.done / 'last.pt'}: it holds Python "
                  "objects other than tensors and plain values, which torch.load(weights_only=True) does not run (they "
                  "could execute code); delete it to train from the start", renders=True)


def checkpoint_tampered_eval(w: World) -> Expect:
    """A finished run's selected weights replaced by a pickle payload: eval refuses to load them."""
    torch.save({"model": {}, "epoch": 0, "payload": _Payload()}, w.done / "checkpoint.pt")
    return Expect(["eval", str(w.done), "--dataset", "synthface", "--device", "cpu", "--set", "data.options.n_test=32"],
                  f"refusing to load {w.done / 'checkpoint.pt'}: it holds Python objects other than tensors and plain "
                  "values, which torch.load(weights_only=True) does not run (they could execute code); train the run "
                  "again (its command with --force)", renders=True)


def checkpoint_other_run(w: World) -> Expect:
    _as_interrupted(w)
    weights = torch.load(w.done / "checkpoint.pt", weights_only=True)["model"]
    torch.save({"model": weights, "epoch": 0, "run_id": "erm-synthface-0123456789"}, w.done / "last.pt")
    return Expect([*SYNTH, "--runs-dir", str(w.runs)], f"refusing to resume from {w.done / 'last.pt'}: it belongs to "
                  f"run erm-synthface-0123456789, not {w.done.name}; delete it to train from the start", renders=True)


def checkpoint_other_model(w: World) -> Expect:
    _as_interrupted(w)
    torch.save({"model": {"head.weight": torch.zeros(3, 3)}, "epoch": 0}, w.done / "last.pt")
    return Expect([*SYNTH, "--runs-dir", str(w.runs)], f"refusing to resume from {w.done / 'last.pt'}: its weights do "
                  "not fit this configuration's model (Error(s) in loading state_dict for ERM:); it comes from another "
                  "configuration: delete it to train from the start", renders=True)


def runs_folder_is_a_file(w: World) -> Expect:
    runs = w.runs / "erm-not-a-folder.txt"
    runs.write_text("a file where the runs folder should be\n")
    return Expect([*SYNTH, "--runs-dir", str(runs)], f"runs folder {runs} exists and is not a folder; choose another "
                  "--runs-dir")


def runs_folder_read_only(w: World) -> Expect:
    point = w.mount_tmpfs("64m")
    w.move_runs(point / "runs")
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
    return Expect([*SYNTH, "--runs-dir", str(w.runs), "--seed", "1"], f"cannot write {w.runs}: the file system is "
                  "read-only (Read-only file system); choose a writable --runs-dir")


def _fill(point: Path, leave_kib: int = 0) -> None:
    """Fill the tmpfs at ``point`` to the last block, then free ``leave_kib``."""
    fd = os.open(point / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave_kib:
        os.truncate(point / "filler", max(0, (point / "filler").stat().st_size - leave_kib * 1024))


def runs_folder_full(w: World) -> Expect:
    point = w.mount_tmpfs("4m")
    w.move_runs(point / "runs")
    _fill(point)
    return Expect([*SYNTH, "--runs-dir", str(w.runs), "--seed", "1"], f"cannot write {w.runs}: the disk is full (No "
                  "space left on device); free some space")


def runs_folder_fills_up_during_the_run(w: World) -> Expect:
    """Room for the small records, not for the first checkpoint: the error names the file, and the
    new run's folder (nothing in it to resume) is removed again."""
    point = w.mount_tmpfs("4m")
    w.move_runs(point / "runs")
    _fill(point, leave_kib=64)
    argv = [*SYNTH, "--runs-dir", str(w.runs), "--seed", "1"]
    return Expect(argv, f"cannot write {w.runs / run_id_of(argv) / 'checkpoint.pt'}: the disk is full (No space left "
                  "on device); free some space", renders=True)


def concurrent_writer(w: World) -> Expect:
    _as_interrupted(w)
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from fairbench.runs.lease import hold
        with hold(Path({str(w.done)!r})):
            print("held", flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    w.cleanup.append(lambda: (holder.kill(), holder.wait()))
    assert holder.stdout.readline().strip() == "held"
    return Expect([*SYNTH, "--runs-dir", str(w.runs)], f"run {w.done} is being trained by pid {holder.pid} on "
                  f"{os.uname().nodename} (heartbeat 0 s ago); not starting a second copy. Wait for it to end; if that "
                  "process is gone, run again: a run whose heartbeat is older than 180 s (FAIRBENCH_LEASE_SECONDS) is "
                  "taken over and resumed from its last checkpoint")


CASES = [image_truncated, image_zero_bytes, image_wrong_format, image_missing, image_is_a_folder, image_symlink_loop,
         label_unknown, label_blank, header_wrong, csv_empty, csv_not_utf8, csv_nul_byte, split_empty, rows_duplicated,
         path_in_two_splits, path_dotdot, path_absolute_outside, path_symlink_outside, train_without_a_class,
         group_without_train_samples, group_without_test_samples, group_without_test_samples_under_a_cap,
         backbone_unknown, max_train_samples_zero, fingerprint_set, data_root_missing, nan_loss, config_unknown_key, config_not_toml,
         config_bad_value, config_unknown_method, config_unknown_dataset_option, suite_unknown_key, plugin_broken,
         status_corrupt, metrics_corrupt, checkpoint_tampered, checkpoint_tampered_eval, checkpoint_other_run, checkpoint_other_model,
         runs_folder_is_a_file, runs_folder_read_only, runs_folder_full, runs_folder_fills_up_during_the_run, concurrent_writer]


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("finished") / "runs"
    assert main([*SYNTH, "--runs-dir", str(runs)]) == 0
    return runs


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input(case, finished_runs, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(finished_runs, runs)
    (done,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    world = World(tmp_path, runs, done, tmp_path / "cache")
    world.cache.mkdir()  # the image cache (--set data.cache_dir, else $FAIRBENCH_CACHE) holds an earlier build
    (world.cache / "earlier-train-32px-0123456789abcdef.u8").write_bytes(bytes(range(256)))
    monkeypatch.setenv("FAIRBENCH_CACHE", str(world.cache))
    try:
        expect = case(world)
        before = snapshot(world.runs)
        cache_before = snapshot(world.cache)
        if expect.env is None:
            capsys.readouterr()
            code = main(expect.argv)
            err = capsys.readouterr().err
        else:
            out = subprocess.run([sys.executable, "-m", "fairbench", *expect.argv], cwd=ROOT, capture_output=True,
                                 text=True, env={**os.environ, **expect.env})
            code, err = out.returncode, out.stderr
        after = snapshot(world.runs)
        cache_after = snapshot(world.cache)
    finally:
        for undo in reversed(world.cleanup):
            undo()
    command = expect.argv[0]
    marker = f"fairbench {command}: error: "
    assert marker in err, err
    assert err[err.index(marker) + len(marker):].rstrip("\n") == expect.message
    assert code == 2
    if expect.renders:
        assert {k: v for k, v in cache_after.items() if k in cache_before} == cache_before
        assert all(Path(k).parts[0] == "rendered" for k in set(cache_after) - set(cache_before))
    else:
        assert cache_after == cache_before  # no image was decoded into the cache, or what was is gone again
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that was there has changed
    new = sorted(set(after) - set(before))
    if expect.new_failed_run:  # training started: one record, marked failed, with the same message
        (folder,) = {Path(k).parts[0] for k in new}
        status = json.loads((world.runs / folder / "status.json").read_text())
        assert status["state"] == "failed" and expect.message in status["error"]
    else:
        assert new == []


def test_the_cap_hint_only_when_the_cap_removed_the_group(tmp_path, capsys):
    """The test split has one Female image; a cap of one test image keeps one group out: the error
    names the cap (raising it helps), where a split without the group names the data (above)."""
    root = tmp_path / "m"
    write_manifest(root, n=30)
    path = root / "manifest.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    female_test = frame.index[(frame["split"] == "test") & (frame["gender"] == "Female")]
    frame.drop(female_test[1:]).to_csv(path, index=False)
    argv = manifest_run(root, tmp_path / "cache", "--max-eval-samples", "1", "--runs-dir", str(tmp_path / "runs"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has training images but none in the test split; its accuracy cannot be measured: --max-eval-samples 1 " \
           "drew none of its test images; raise it (or leave it out)" in err, err
