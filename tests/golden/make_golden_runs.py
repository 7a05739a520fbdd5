"""Writes ``tests/golden/golden_runs/``: a small, hand-made but consistent set of run records.

    .venv/bin/python tests/golden/make_golden_runs.py      # then review and check in the folder

What it holds (configurations are jobs of the suites under ``benchmarks/``, resolved as
``fairbench run`` would; folder name = run id of the stored configuration):

- FairFace gender ~ race x gender (``paper-gender.toml``): erm and fineface (seeds 0-2),
  multitask, adversarial and consistency (seeds 0-1); erm and fineface also evaluated on
  UTKFace, LFWA+ and CelebA (``evaluations/<dataset>-test/``). Group accuracies loosely follow
  the paper's tables, at the resolution the small test sets allow. Pareto front of
  (DoB, accuracy) on FairFace test: fineface and adversarial (see tests/results/test_plots.py).
- CelebA attributes ~ Male (``paper-celeba.toml``): erm and fineface on Bangs, Eyeglasses and
  Smiling, seeds 0-1. The Eyeglasses test set has no positive among women (an edge case on
  purpose): its TPR-based gaps are undefined.
- SynthFace (``quickstart-8-epochs.toml``): erm and groupdro, seeds 0-1; fineface seed 0 failed; jtt
  seed 0 incomplete (its process died): both are skipped by the tables, with the reason.

Predictions are drawn from fixed per-group accuracy profiles with a seeded generator; every
``metrics.json`` report is computed from the stored predictions by the real metric code
(``fairbench.evaluation.predict.report_for``), so ``tests/results/test_tables.py`` can check they agree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from fairbench.config import build_config, resolve, run_id
from fairbench.data.fairface import RACE7
from fairbench.data.utkface import RACES as UTK_RACES
from fairbench.data.vocab import GENDER_ORDER
from fairbench.evaluation.predict import report_for
from fairbench.runs.store import atomic_write_json
from fairbench.suites.suite import Suite

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "golden_runs"
STAMP = "2026-01-01T00:00:00+00:00"

# -- per-group accuracy profiles (%) ---------------------------------------------------------------
FAIRFACE_GROUPS = [f"{r}|{g}" for r in RACE7 for g in GENDER_ORDER]
FAIRFACE = {  # method: accuracy per group, in FAIRFACE_GROUPS order
    "erm": [96, 88, 96, 80, 96, 88, 96, 92, 96, 92, 100, 92, 100, 92],
    "fineface": [96, 96, 96, 96, 96, 96, 96, 96, 96, 92, 96, 96, 96, 96],
    "multitask": [96, 92, 92, 88, 96, 92, 96, 92, 96, 92, 96, 96, 100, 92],
    "adversarial": [92, 92, 92, 88, 92, 92, 92, 92, 92, 92, 92, 92, 92, 92],
    "consistency": [96, 92, 96, 88, 96, 92, 92, 92, 96, 92, 96, 92, 96, 92],
}
RACE4_GROUPS = lambda races: [f"{r}|{g}" for r in races for g in GENDER_ORDER]  # noqa: E731
CROSS = {  # evaluated dataset: (groups, {method: accuracy per group})
    "utkface": (RACE4_GROUPS(UTK_RACES), {"erm": [90, 70, 95, 65, 90, 65, 95, 75, 90, 80],
                                          "fineface": [90, 85, 95, 80, 90, 80, 95, 85, 90, 90]}),
    "lfwa": (RACE4_GROUPS(["White", "Black", "Asian", "Indian", "Undefined"]),
             {"erm": [100, 90, 95, 85, 95, 90, 100, 95, 95, 90],
              "fineface": [100, 100, 100, 95, 100, 95, 100, 100, 100, 95]}),
    "celeba": (["Male", "Female"], {"erm": [90, 95], "fineface": [96, 99]}),
}
CELEBA_TARGETS = ["Bangs", "Eyeglasses", "Smiling"]
CELEBA = {  # target: {method: (accuracy on Male, on Female)}
    "Bangs": {"erm": (94, 90), "fineface": (94, 94)},
    "Eyeglasses": {"erm": (98, 98), "fineface": (100, 98)},
    "Smiling": {"erm": (90, 94), "fineface": (92, 92)},
}
SYNTH_GROUPS = [f"{t}|{p}" for t in ("I", "II", "III", "IV") for p in ("short_hair", "long_hair")]
SYNTH = {"erm": [95, 95, 90, 90, 85, 80, 75, 70], "groupdro": [90, 90, 85, 85, 85, 85, 80, 80]}


def _jobs(suite_file: str) -> list:
    return Suite.load(ROOT / "benchmarks" / suite_file).jobs()


def _config(spec: dict) -> dict:
    cfg = resolve(build_config(None, spec))
    return {**cfg.model_dump(mode="json"), "run_id": run_id(cfg)}


def _frame(groups: list[str], accuracy: list[float], n: int, rng: np.random.Generator, columns: list[str],
           target_of) -> pd.DataFrame:
    """n samples per group; per group round(acc * n) correct, one more or one fewer in up to 3
    groups drawn by the seed (the seed-to-seed spread)."""
    rows = []
    noisy = set(rng.choice(len(groups), size=min(3, len(groups) - 1), replace=False).tolist())
    for i_group, (g, acc) in enumerate(zip(groups, accuracy)):
        correct = int(round(acc / 100 * n)) + (int(rng.choice([-1, 1])) if i_group in noisy else 0)
        correct = min(n, max(0, correct))
        targets = target_of(g, n)
        wrong = set(rng.choice(n, size=n - correct, replace=False).tolist())
        for i in range(n):
            y = int(targets[i])
            pred = 1 - y if i in wrong else y
            p1 = float(np.round(rng.uniform(0.55, 0.99) if pred == 1 else rng.uniform(0.01, 0.45), 2))
            values = g.split("|")
            rows.append({"target": y, "group": g, **dict(zip(columns, values)), "score_0": round(1 - p1, 2),
                         "score_1": p1, "pred": pred})
    frame = pd.DataFrame(rows)
    frame.insert(0, "sample_id", [f"{i:05d}" for i in range(len(frame))])
    frame.insert(0, "index", np.arange(len(frame)))
    return frame


def _gender_target(group: str, n: int) -> np.ndarray:
    """FairFace / CelebA gender: classes Female = 0, Male = 1, constant within a group."""
    return np.full(n, 1 if group.split("|")[-1] == "Male" else 0)


def _write_run(cfg: dict, test: pd.DataFrame, val: pd.DataFrame, order: list[str], state: str = "done",
               evaluations: dict[str, tuple[pd.DataFrame, dict]] | None = None) -> Path:
    path = OUT / cfg["run_id"]
    path.mkdir(parents=True)
    atomic_write_json(path / "config.json", cfg)
    test.to_csv(path / "predictions_test.csv", index=False)
    val.to_csv(path / "predictions_val.csv", index=False)
    val_report = report_for(val, order)
    metrics = {"selection": {"rule": cfg["selection"], "epoch": cfg["train"]["epochs"] - 1,
                             "score": val_report.get(cfg["selection"], val_report["accuracy"])},
               "val": val_report, "test": report_for(test, order),
               "seeds": {k: cfg["train"]["seed"] for k in ("python", "numpy", "torch", "sampler")},
               "wall_time_s": 1000.0}
    atomic_write_json(path / "metrics.json", metrics)
    atomic_write_json(path / "status.json", {"state": state, "pid": 4242, "host": "golden", "updated": STAMP,
                                             "started": STAMP, "ended": STAMP, "wall_time_s": 1000.0})
    for name, (frame, info) in (evaluations or {}).items():
        folder = path / "evaluations" / f"{name}-test"
        folder.mkdir(parents=True)
        frame.to_csv(folder / "predictions.csv", index=False)
        atomic_write_json(folder / "metrics.json", {"dataset": name, "split": "test", "run_id": cfg["run_id"],
                                                    "report": report_for(frame, info["order"]), **info["meta"]})
    return path


def _write_unfinished(cfg: dict, status: dict) -> None:
    path = OUT / cfg["run_id"]
    path.mkdir(parents=True)
    atomic_write_json(path / "config.json", cfg)
    atomic_write_json(path / "status.json", {"pid": 4242, "host": "golden", "updated": STAMP, "started": STAMP, **status})


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    seeds = {"erm": [0, 1, 2], "fineface": [0, 1, 2], "multitask": [0, 1], "adversarial": [0, 1], "consistency": [0, 1]}
    for job in _jobs("paper-gender.toml"):
        if job.seed not in seeds.get(job.method, []):
            continue
        cfg = _config(job.spec)
        rng = np.random.default_rng(1000 * job.seed + sorted(FAIRFACE).index(job.method))
        cols = ["race", "gender"]
        test = _frame(FAIRFACE_GROUPS, FAIRFACE[job.method], 25, rng, cols, _gender_target)
        val = _frame(FAIRFACE_GROUPS, FAIRFACE[job.method], 5, rng, cols, _gender_target)
        evaluations = {}
        for name, (groups, profiles) in CROSS.items() if job.method in ("erm", "fineface") else []:
            protected = ["Male"] if name == "celeba" else ["race", "gender"]
            frame = _frame(groups, profiles[job.method], 20, rng, protected, _gender_target)
            meta = {"target": "Male" if name == "celeba" else "gender", "protected": protected,
                    "classes": ["Female", "Male"], "run_target": "gender", "run_classes": ["Female", "Male"]}
            evaluations[name] = (frame, {"order": groups, "meta": meta})
        _write_run(cfg, test, val, FAIRFACE_GROUPS, evaluations=evaluations)

    for job in _jobs("paper-celeba.toml"):
        target = job.spec["data.target"]
        if job.method not in ("erm", "fineface") or target not in CELEBA_TARGETS or job.seed not in (0, 1):
            continue
        cfg = _config(job.spec)
        truth_rng = np.random.default_rng(CELEBA_TARGETS.index(target))  # the test labels: the same for every seed

        def attribute_target(group: str, n: int, _rng=truth_rng, _target=target) -> np.ndarray:
            if _target == "Eyeglasses" and group == "Female":
                return np.zeros(n, dtype=int)  # no positive among women: TPR undefined
            y = np.zeros(n, dtype=int)
            y[_rng.choice(n, size=n // 3, replace=False)] = 1
            return y

        rng = np.random.default_rng(100 * job.seed + CELEBA_TARGETS.index(target) + (50 if job.method == "fineface" else 0))
        test = _frame(["Male", "Female"], list(CELEBA[target][job.method]), 50, rng, ["Male"], attribute_target)
        val = _frame(["Male", "Female"], list(CELEBA[target][job.method]), 10, rng, ["Male"], attribute_target)
        _write_run(cfg, test, val, ["Male", "Female"])

    cols = ["skin_tone", "presentation"]
    for job in _jobs("quickstart-8-epochs.toml"):
        if job.method in SYNTH and job.seed in (0, 1):
            cfg = _config(job.spec)
            rng = np.random.default_rng(10 * job.seed + (1 if job.method == "groupdro" else 0))

            def smiling(group: str, n: int, _rng=rng) -> np.ndarray:
                return (_rng.permutation(n) < n // 2).astype(int)  # a balanced test set, as synthface's

            test = _frame(SYNTH_GROUPS, SYNTH[job.method], 20, rng, cols, smiling)
            val = _frame(SYNTH_GROUPS, SYNTH[job.method], 5, rng, cols, smiling)
            _write_run(cfg, test, val, SYNTH_GROUPS)
        elif job.method == "fineface" and job.seed == 0:
            _write_unfinished(_config(job.spec), {"state": "failed", "ended": STAMP,
                                                  "error": "RuntimeError: DataLoader worker was killed (out of memory)"})
        elif job.method == "jtt" and job.seed == 0:
            _write_unfinished(_config(job.spec), {"state": "incomplete", "epoch": 2,
                                                  "reason": "process 4242 died during epoch 2"})
    print(f"wrote {len(list(OUT.iterdir()))} run folders under {OUT}")


if __name__ == "__main__":
    main()
