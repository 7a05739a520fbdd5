"""Known-answer checks on the SynthFace scenarios: does the harness recover what the literature established?

Reads the finished runs of the three suites (``known-answers.toml``, ``known-answers-controls.toml``,
``known-answers-dose.toml``) from one runs folder and writes, into ``--output``:

- ``per-seed.csv``: one row per run (scenario, dial, method, seed, test accuracy per group, gap,
  selected epoch, last training loss, wall time);
- ``summary.md``: mean and 95 % t-interval over seeds per (scenario, dial, method); the paired
  differences against ERM (same seed = same data, order and initialisation); the noise floor of
  the gap; every check with its verdict (``checks.json`` holds the same);
- ``worst-group-vs-dial.png``: test worst-group accuracy against the spurious scenario's dial;
- ``curves-*.png``: training loss and validation accuracy per epoch (``fairbench plot curves``).

Usage (after the suites have run)::

    python benchmarks/known_answers.py --runs-dir runs/known-answers --output benchmarks/results/known-answers

The group gap of a run is its best minus its worst test group accuracy (two groups per scenario).
The noise floor is what a perfectly fair classifier would show on the same test split: both
groups' accuracies drawn as Binomial(n_group, a) / n_group at the run's accuracy ``a``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.data.synthface import SCENARIOS
from fairbench.metrics.uncertainty import mean_t_interval, paired_difference
from fairbench.runs.record import selected_epoch

SCENARIO_OF = {cls.registered_name: scenario for scenario, cls in SCENARIOS.items()}  # dataset name -> scenario
METHODS = ("erm", "groupdro", "subg", "jtt", "fineface")
#: the spurious scenario's default dial, where the method comparisons are made
SPURIOUS_DEFAULT = 0.95


# -- reading the runs --------------------------------------------------------------------------

def last_train_loss(run: Path) -> float:
    """The run's last epoch's mean training loss (NaN before its first epoch ends)."""
    history = run / "history.json"
    if not history.is_file():
        return math.nan
    entries = json.loads(history.read_text())
    return float(entries[-1]["train"].get("loss", math.nan)) if entries else math.nan


def load_runs(runs_dir: Path) -> pd.DataFrame:
    """One row per finished scenario run in ``runs_dir`` (other datasets and unfinished runs are skipped)."""
    from fairbench.registry import datasets
    from fairbench.runs.catalog import finished, load_records

    records, _ = load_records(runs_dir)
    done, _ = finished(records)
    rows = []
    for rec in done:
        scenario = SCENARIO_OF.get(rec.dataset)
        if scenario is None:
            continue
        options = rec.config["data"]["options"]
        dial_name = datasets.get(rec.dataset).Options.dial
        test = rec.metrics()["test"]
        groups = {str(k): float(v) for k, v in test["group_accuracy"].items()}
        support = test.get("group_support") or {}
        rows.append({
            "scenario": scenario, "dial_name": dial_name or "",
            "dial": float(options[dial_name]) if dial_name else math.nan,
            "method": rec.method, "selection": rec.config.get("selection"), "seed": rec.seed,
            "epochs": int(rec.config["train"]["epochs"]), "protected": ",".join(rec.protected),
            "accuracy": float(test["accuracy"]), "worst_group_accuracy": float(test["worst_group_accuracy"]),
            "best_group_accuracy": float(max(groups.values())),
            "gap": float(max(groups.values()) - min(groups.values())), "dob": float(test["dob"]),
            "group_accuracy": json.dumps(groups, sort_keys=True),
            "min_group_support": (int(min(v["n"] for v in support.values())) if support
                                  else int(test["n"]) // max(1, len(groups))),
            "selected_epoch": selected_epoch(rec.metrics()),  # counted from 1
            "last_train_loss": last_train_loss(rec.path),
            "wall_time_s": float(rec.metrics().get("wall_time_s", math.nan)),
            "run": rec.run_id, "path": str(rec.path),
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise SystemExit(f"no finished scenario runs under {runs_dir}; run the known-answers suites first")
    # One run per setting and seed: the same setting finished twice (under two run ids) must not
    # count one seed twice. Identical test results are a reproduction: keep one and say so;
    # different ones are an error to resolve by hand.
    key = ["scenario", "dial", "method", "selection", "epochs", "protected", "seed"]
    frame = frame.sort_values("run")
    dupes = frame[frame.duplicated(key, keep=False)]
    for _, same in dupes.groupby(key, dropna=False):
        if same[["accuracy", "group_accuracy"]].drop_duplicates().shape[0] > 1:
            raise SystemExit("several finished runs of one setting and seed with different results "
                             f"(keep one, move the others away): {', '.join(same['run'])}")
    frame = frame.drop_duplicates(key, keep="first").copy()
    reproduced = {first: ",".join(rest) for first, *rest in
                  (list(same["run"]) for _, same in dupes.groupby(key, dropna=False))}
    frame["reproduced_by"] = [reproduced.get(run, "") for run in frame["run"]]
    return frame.sort_values(["scenario", "dial", "method", "seed"]).reset_index(drop=True)


# -- statistics -------------------------------------------------------------------------------

def noise_floor(accuracy: float, n_per_group: int, groups: int = 2, draws: int = 20000, seed: int = 0) -> dict[str, float]:
    """Gap (best - worst group accuracy, pp) and DoB (std over groups, pp) of a perfectly fair
    classifier at ``accuracy`` (%) with ``n_per_group`` test images per group: mean and 95th percentile."""
    rng = np.random.default_rng(seed)
    accs = rng.binomial(n_per_group, accuracy / 100.0, size=(draws, groups)) / n_per_group * 100.0
    gap = accs.max(1) - accs.min(1)
    dob = accs.std(1)
    return {"accuracy": accuracy, "n_per_group": n_per_group, "gap_mean": float(gap.mean()),
            "gap_q95": float(np.quantile(gap, 0.95)), "dob_mean": float(dob.mean()), "dob_q95": float(np.quantile(dob, 0.95))}


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % t-interval half-width over seeds per (scenario, dial, method, epochs)."""
    rows = []
    keys = ["scenario", "dial", "method", "epochs"]
    for key, part in frame.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, key))
        row["seeds"] = len(part)
        for metric in ("accuracy", "worst_group_accuracy", "best_group_accuracy", "gap", "dob"):
            mean, half, _ = mean_t_interval(part[metric])
            row[metric], row[f"{metric}_ci"] = mean, half
        row["wall_time_s"] = float(part["wall_time_s"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _by_seed(frame: pd.DataFrame, metric: str, **where: Any) -> dict[int, float]:
    part = frame
    for column, value in where.items():
        part = part[np.isclose(part[column], value)] if isinstance(value, float) else part[part[column] == value]
    return dict(zip(part["seed"], part[metric]))


@dataclass
class Check:
    name: str
    statement: str
    measured: str
    passed: bool | None  # None: not enough runs to decide
    note: str = ""


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.2f} ± {half:.2f}" if not math.isnan(half) else f"{mean:.2f}"


def run_checks(frame: pd.DataFrame, min_seeds: int = 5, epochs: int | None = None) -> list[Check]:
    """The known-answer checks; each one needs ``min_seeds`` seeds or it is reported undecided.

    ``epochs``: the methods' budget (default: the budget most runs have). "Converged ERM" on
    spurious is ERM at the largest budget it ran with there (the checks say which, with its last
    training loss); the methods are compared against it."""
    if epochs is None:
        epochs = int(frame["epochs"].mode().iloc[0])
    f = frame[frame["epochs"] == epochs]
    checks: list[Check] = []
    spurious = f[f["scenario"] == "spurious"]
    erm_all = frame[(frame["scenario"] == "spurious") & (frame["method"] == "erm")]
    converged = int(erm_all["epochs"].max()) if len(erm_all) else epochs
    erm = erm_all[erm_all["epochs"] == converged]

    def enough(values: dict) -> bool:
        return len(values) >= min_seeds

    # 1. converged ERM keeps a worst-group gap >= 20 pp on spurious (default dial)
    gaps = _by_seed(erm, "gap", dial=SPURIOUS_DEFAULT)
    if gaps:
        mean, half, n = mean_t_interval(list(gaps.values()))
        low = mean - half if not math.isnan(half) else math.nan
        loss = float(erm[np.isclose(erm["dial"], SPURIOUS_DEFAULT)]["last_train_loss"].mean())
        checks.append(Check("spurious_erm_gap", f"converged ERM ({converged} epochs) on spurious (agreement "
                            f"{SPURIOUS_DEFAULT}) keeps a group gap >= 20 pp (lower end of the 95 % interval)",
                            f"gap {_fmt(mean, half)} pp, n={n}; last training loss {loss:.3f}",
                            bool(low >= 20) if enough(gaps) else None))

    # 2. dose-response: the converged ERM gap grows with the dial (>= 3 values; means ordered, ends paired)
    dials = sorted(d for d in erm["dial"].unique() if enough(_by_seed(erm, "gap", dial=d)))
    if len(dials) >= 3:
        means = [float(np.mean(list(_by_seed(erm, "gap", dial=d).values()))) for d in dials]
        ends = paired_difference(_by_seed(erm, "gap", dial=dials[-1]), _by_seed(erm, "gap", dial=dials[0]))
        monotone = all(b >= a for a, b in zip(means, means[1:]))
        checks.append(Check("spurious_dose_response", f"the gap of ERM ({converged} epochs) grows monotonically with "
                            "the agreement dial, and the highest dial's gap exceeds the lowest's (paired interval above 0)",
                            "mean gap per dial: " + ", ".join(f"{d:g}: {m:.1f}" for d, m in zip(dials, means))
                            + f"; highest - lowest: {ends.describe()}",
                            bool(monotone and ends.low > 0) if ends.n >= min_seeds else None,
                            "" if monotone else "the means are not monotone in the dial"))

    # 3. GroupDRO, SUBG, JTT raise worst-group accuracy over converged ERM on spurious (paired, default dial)
    base = _by_seed(erm, "worst_group_accuracy", dial=SPURIOUS_DEFAULT)
    for method, who in (("groupdro", "GroupDRO (Sagawa et al. 2020)"), ("subg", "SUBG (Idrissi et al. 2022)"),
                        ("jtt", "JTT, worst-group validation selection (Liu et al. 2021)")):
        ours = _by_seed(spurious, "worst_group_accuracy", method=method, dial=SPURIOUS_DEFAULT)
        if ours and base:
            d = paired_difference(ours, base)
            checks.append(Check(f"spurious_{method}_beats_erm", f"{who}, {epochs} epochs, raises worst-group accuracy "
                                f"over ERM ({converged} epochs) on spurious (agreement {SPURIOUS_DEFAULT}): paired "
                                "interval above 0", d.describe(), bool(d.low > 0) if d.n >= min_seeds else None))

    # 4. ERM on none is the upper reference: no method on spurious has a higher worst group,
    #    and ERM's own gap on none is within the noise floor
    none = f[(f["scenario"] == "none") & (f["method"] == "erm")]
    if len(none):
        ref, ref_half, n = mean_t_interval(none["worst_group_accuracy"])
        floor = noise_floor(float(none["accuracy"].mean()), int(none["min_group_support"].min()))
        gap, gap_half, _ = mean_t_interval(none["gap"])
        at_default = pd.concat([spurious[spurious["method"] != "erm"], erm])
        best = at_default[np.isclose(at_default["dial"], SPURIOUS_DEFAULT)].groupby("method")["worst_group_accuracy"].mean()
        above = [m for m, v in best.items() if v > ref + (ref_half if not math.isnan(ref_half) else 0)]
        checks.append(Check("none_is_upper_reference", "ERM on none (no bias) has a worst-group accuracy no method "
                            "reaches on spurious, and its own gap is within the noise floor (95th percentile)",
                            f"none ERM worst group {_fmt(ref, ref_half)} %, gap {_fmt(gap, gap_half)} pp "
                            f"(floor q95 {floor['gap_q95']:.2f} pp); best on spurious: "
                            + ", ".join(f"{m} {v:.1f}" for m, v in best.sort_values(ascending=False).items()),
                            bool(not above and gap <= floor["gap_q95"]) if n >= min_seeds else None,
                            f"above the reference: {', '.join(above)}" if above else ""))

    # 5. label noise: no method's tone-IV accuracy exceeds 1 - rate beyond the noise floor, and no
    #    method narrows ERM's gap by more than the floor
    noisy = f[f["scenario"] == "label_noise"]
    if len(noisy):
        rate = float(noisy["dial"].iloc[0])
        base_gap = _by_seed(noisy, "gap", method="erm")
        for method in sorted(noisy["method"].unique()):
            part = noisy[noisy["method"] == method]
            iv = [json.loads(g).get("IV", math.nan) for g in part["group_accuracy"]]
            n_iv = int(part["min_group_support"].min())
            ceiling = 100 * (1 - rate)
            # binomial spread of a perfect classifier's tone-IV accuracy around the ceiling
            slack = 1.96 * math.sqrt(ceiling * (100 - ceiling) / n_iv)
            mean_iv = float(np.nanmean(iv))
            measured = f"tone IV accuracy {mean_iv:.2f} % (ceiling {ceiling:.0f} % + {slack:.2f})"
            passed = mean_iv <= ceiling + slack
            if method != "erm":
                d = paired_difference(_by_seed(noisy, "gap", method=method), base_gap)
                floor = noise_floor(float(part["accuracy"].mean()), n_iv)
                measured += f"; gap - ERM's gap {d.describe()} (floor q95 {floor['gap_q95']:.2f} pp)"
                passed = passed and not (d.high < -floor["gap_q95"])
            checks.append(Check(f"label_noise_{method}", f"on label_noise ({rate:g}) {method} does not close the "
                                "gap beyond the noise floor", measured, bool(passed) if len(part) >= min_seeds else None))
    return checks


def budget_control(frame: pd.DataFrame, metric: str = "worst_group_accuracy") -> list[list[str]]:
    """Where ERM also ran with another number of epochs than the usual budget: ERM(E) - ERM(usual),
    and each other method at the usual budget - ERM(E) (e.g. FineFACE against ERM with its steps)."""
    usual = int(frame["epochs"].mode().iloc[0])
    rows = []
    for (scenario, dial), part in frame.groupby(["scenario", "dial"], dropna=False):
        erm = part[part["method"] == "erm"]
        base = dict(zip(erm[erm["epochs"] == usual]["seed"], erm[erm["epochs"] == usual][metric]))
        for epochs in sorted(set(erm["epochs"]) - {usual}):
            longer = dict(zip(erm[erm["epochs"] == epochs]["seed"], erm[erm["epochs"] == epochs][metric]))
            where = ["" if math.isnan(dial) else f"{dial:g}"]
            rows.append([scenario, *where, f"ERM {epochs} epochs - ERM {usual}", paired_difference(longer, base).describe()])
            for method in sorted(set(part["method"]) - {"erm"}):
                other = part[(part["method"] == method) & (part["epochs"] == usual)]
                d = paired_difference(dict(zip(other["seed"], other[metric])), longer)
                rows.append([scenario, *where, f"{method} {usual} epochs - ERM {epochs}", d.describe()])
    return rows


# -- outputs ---------------------------------------------------------------------------------

def plot_dial(frame: pd.DataFrame, output: Path) -> None:
    """Test worst-group accuracy (mean ± 95 % t-interval over seeds) against the spurious dial."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    spurious = frame[frame["scenario"] == "spurious"]
    fig, ax = plt.subplots(figsize=(7.2, 4.8), layout="constrained")
    lines = [(m, e) for m in METHODS for e in sorted(spurious.loc[spurious["method"] == m, "epochs"].unique())]
    for i, (method, epochs) in enumerate(lines):
        rows = summarise(spurious[(spurious["method"] == method) & (spurious["epochs"] == epochs)]).sort_values("dial")
        half, mean = rows["worst_group_accuracy_ci"].fillna(0).to_numpy(), rows["worst_group_accuracy"].to_numpy()
        yerr = [np.minimum(half, mean), np.minimum(half, 100.0 - mean)]  # intervals clipped to 0-100 %
        seeds = f"{int(rows['seeds'].min())}" + (f"-{int(rows['seeds'].max())}" if rows["seeds"].nunique() > 1 else "")
        ax.errorbar(rows["dial"] + (i - len(lines) / 2) * 0.002, rows["worst_group_accuracy"], yerr=yerr, marker="o",
                    ms=4, capsize=3, lw=1.3, ls="--" if method == "erm" and epochs != lines[0][1] else "-",
                    label=f"{method}, {epochs} epochs ({seeds} seeds)")
    none = frame[(frame["scenario"] == "none") & (frame["method"] == "erm")]
    if len(none):
        ax.axhline(none["worst_group_accuracy"].mean(), color="grey", ls="--", lw=1, label="ERM on none (no bias)")
    ax.set_xlabel("agreement of background and target in train / val (the dial)")
    ax.set_ylabel("test worst-group accuracy (%), mean ± 95 % t-interval")
    ax.set_title("synthface-spurious: groups = bias-aligned / bias-conflicting", fontsize=10)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(output, dpi=130)
    plt.close(fig)


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", floatfmt=".2f")


def write_report(frame: pd.DataFrame, output: Path, min_seeds: int = 5, curves: bool = True) -> list[Check]:
    output.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["path"]).to_csv(output / "per-seed.csv", index=False, float_format="%.4f")
    summary = summarise(frame)
    checks = run_checks(frame, min_seeds=min_seeds)
    (output / "checks.json").write_text(json.dumps([asdict(c) for c in checks], indent=2) + "\n")
    twins = int((frame["reproduced_by"] != "").sum()) if "reproduced_by" in frame else 0
    lines = ["# Known-answer checks: measured", "",
             f"{len(frame)} finished runs; mean ± 95 % t-interval half-width over seeds; test split."
             + (f" {twins} of them finished twice under two run ids with identical test results "
                "(column `reproduced_by` of per-seed.csv); each counts once." if twins else ""), "",
             "## Per scenario, dial and method", ""]
    lines.append(_table([[r.scenario, "" if math.isnan(r.dial) else f"{r.dial:g}", r.method, r.epochs, r.seeds,
                          _fmt(r.accuracy, r.accuracy_ci), _fmt(r.worst_group_accuracy, r.worst_group_accuracy_ci),
                          _fmt(r.best_group_accuracy, r.best_group_accuracy_ci), _fmt(r.gap, r.gap_ci),
                          f"{r.wall_time_s:.0f}"] for r in summary.itertuples()],
                        ["scenario", "dial", "method", "epochs", "seeds", "Acc", "Worst grp", "Best grp",
                         "Gap (pp)", "wall s/run"]))
    lines += ["", "## Noise floor of the gap (a perfectly fair classifier, binomial draws)", ""]
    floors = []
    for r in summary.itertuples():
        if r.method == "erm":
            support = int(frame[(frame["scenario"] == r.scenario) & (frame["method"] == "erm")]["min_group_support"].min())
            fl = noise_floor(r.accuracy, support)
            floors.append([r.scenario, "" if math.isnan(r.dial) else f"{r.dial:g}", r.epochs, f"{r.accuracy:.2f}", support,
                           fl["gap_mean"], fl["gap_q95"], fl["dob_mean"], fl["dob_q95"]])
    lines.append(_table(floors, ["scenario", "dial", "epochs", "ERM acc", "n per group", "gap mean", "gap q95", "DoB mean",
                                 "DoB q95"]))
    lines += ["", "## Paired differences against ERM (method - ERM, same seeds)", ""]
    paired_rows = []
    for (scenario, dial, epochs), part in frame.groupby(["scenario", "dial", "epochs"], dropna=False):
        for method in sorted(set(part["method"]) - {"erm"}):
            for metric in ("worst_group_accuracy", "gap", "accuracy"):
                d = paired_difference(dict(zip(part[part["method"] == method]["seed"], part[part["method"] == method][metric])),
                                      dict(zip(part[part["method"] == "erm"]["seed"], part[part["method"] == "erm"][metric])))
                if d.n:
                    paired_rows.append([scenario, "" if math.isnan(dial) else f"{dial:g}", method, metric, d.describe()])
    lines.append(_table(paired_rows, ["scenario", "dial", "method", "metric", "method - ERM"]))
    budget = budget_control(frame)
    if budget:
        lines += ["", "## Budget control: ERM with more epochs (worst-group accuracy, paired over seeds)", ""]
        lines.append(_table(budget, ["scenario", "dial", "comparison", "difference"]))
    lines += ["", "## Checks", ""]
    lines.append(_table([[c.name, c.statement, c.measured,
                          {True: "PASS", False: "FAIL", None: "undecided"}[c.passed], c.note] for c in checks],
                        ["check", "statement", "measured", "verdict", "note"]))
    (output / "summary.md").write_text("\n".join(lines) + "\n")
    if (frame["scenario"] == "spurious").any():
        plot_dial(frame, output / "worst-group-vs-dial.png")
    if curves:
        from fairbench.results.plots import plot_curves

        seed0 = frame[frame["seed"] == frame["seed"].min()]
        first = seed0[(seed0["scenario"] == "spurious") & np.isclose(seed0["dial"], SPURIOUS_DEFAULT)]
        others = seed0[(seed0["method"] == "erm") & (seed0["scenario"] != "spurious")]
        for name, part in (("curves-spurious.png", first), ("curves-erm-scenarios.png", others)):
            if len(part):
                plot_curves([Path(p) for p in part["path"]], output / name)
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/known-answers"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/known-answers"))
    parser.add_argument("--min-seeds", type=int, default=5, help="seeds a check needs to be decided (default 5)")
    args = parser.parse_args(argv)
    frame = load_runs(args.runs_dir)
    checks = write_report(frame, args.output, min_seeds=args.min_seeds)
    for c in checks:
        print(f"{ {True: 'PASS', False: 'FAIL', None: 'undecided'}[c.passed]:9s} {c.name}: {c.measured}")
    print(f"wrote {args.output}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
