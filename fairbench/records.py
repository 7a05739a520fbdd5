"""The read model of the run store: what every table, plot, suite report and ``compare`` reads.

:class:`fairbench.run_store.RunRecord` is one run folder's files; a :class:`Record` is a run as
the reporting side sees it: its configuration (and the flat identity that tells settings apart),
its status, metrics, the reports it was evaluated with (its own test split and every cross-dataset
evaluation, :class:`Evaluated`), where it ran and at what precision, and what its training cost
(the ``cost`` block of ``metrics.json``; ``None`` for runs recorded before it existed).

:func:`load_records` reads a runs folder once; :func:`finished` keeps the done runs and says
why the others are left out. Nothing here imports the training code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairbench.run_store import RunRecord, iter_runs


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"name": "x"}}`` -> ``{"data.name": "x"}``; lists are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def run_precision(record: RunRecord, cfg: dict[str, Any]) -> str | None:
    """"bf16" if the run trained under bf16 autocast (train.amp on a CUDA device), else "fp32";
    None when its environment.json does not say where it ran."""
    try:
        device = str(record.environment().get("device", ""))
    except (OSError, ValueError):
        return None
    return "bf16" if cfg.get("train", {}).get("amp") and device.startswith("cuda") else "fp32"


@dataclass
class Evaluated:
    """One report of a run: its own test split, or a cross-dataset evaluation."""

    record: "Record"
    dataset: str
    split: str
    report: dict[str, Any]
    predictions: Path | None
    protected: tuple[str, ...]  # the evaluated data's group columns
    #: the evaluated data's fingerprint digest (the run's own for its test split; None: not recorded)
    fingerprint: str | None = None
    _by: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def report_by(self, attribute: str) -> dict[str, Any]:
        """The report with groups = the values of one protected column, from the predictions."""
        if attribute not in self._by:
            order: list[str] = []  # the values in the dataset's display order of the full groups
            if attribute in self.protected:
                at = self.protected.index(attribute)
                for g in self.report.get("group_accuracy") or {}:
                    parts = str(g).split("|")
                    if len(parts) == len(self.protected) and parts[at] not in order:
                        order.append(parts[at])
            self._by[attribute] = _report_by(self.predictions, attribute, order)
        return self._by[attribute]


def _report_by(path: Path | None, attribute: str, order: list[str]) -> dict[str, Any]:
    import pandas as pd

    from fairbench.metrics import evaluate_predictions

    if path is None or not path.is_file():
        return {"_missing": "no stored predictions"}
    frame = pd.read_csv(path, dtype={attribute: str}, keep_default_na=False)
    if attribute not in frame.columns:
        return {"_missing": f"predictions have no column {attribute!r}"}
    score_cols = [c for c in frame.columns if c.startswith("score_")]
    report = evaluate_predictions(frame["target"].to_numpy(), frame["pred"].to_numpy(), frame[attribute].to_numpy(),
                                  num_classes=len(score_cols) or None)
    rank = {g: i for i, g in enumerate(order)}
    report["group_accuracy"] = dict(sorted(report["group_accuracy"].items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    return report


@dataclass
class Record:
    run_id: str
    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    #: flat dotted keys of the hashed configuration, but a generated dataset's data seed and the
    #: fingerprint of what it drew: like train.seed, they vary across the seeds of one setting
    identity: dict[str, Any]
    setting_key: str = ""  # the hashed configuration but the seed: runs that differ only in seed share it
    #: its search trial (0: the defaults) when read with the suite that ran it, else None
    trial: int | None = None
    _metrics: dict[str, Any] | None = field(default=None, repr=False)
    _evaluations: list[Evaluated] | None = field(default=None, repr=False, compare=False)

    @property
    def store(self) -> RunRecord:
        return RunRecord(self.path)

    @property
    def state(self) -> str:
        return self.status.get("state", "incomplete")

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def seed(self) -> int:
        return int(self.config["train"]["seed"])

    @property
    def dataset(self) -> str:
        return self.config["data"]["name"]

    @property
    def target(self) -> str:
        return self.config["data"]["target"]

    @property
    def protected(self) -> tuple[str, ...]:
        return tuple(self.config["data"]["protected"])

    @property
    def task(self) -> str:
        return f"{self.target} ~ {'+'.join(self.protected)}"

    @property
    def selection(self) -> str | None:
        return self.config.get("selection")

    @property
    def data_fingerprint(self) -> str | None:
        """What data the setting's seeds share; None for generated data, drawn anew per seed."""
        return self.identity.get("data.fingerprint")

    @property
    def precision(self) -> str | None:
        """"bf16" (trained under bf16 autocast on a GPU), "fp32", or None if not recorded."""
        return run_precision(self.store, self.config)

    def metrics(self) -> dict[str, Any]:
        if self._metrics is None:
            self._metrics = json.loads((self.path / "metrics.json").read_text())
        return self._metrics

    def cost(self) -> dict[str, Any] | None:
        """The training cost block of metrics.json (fairbench.cost); None if the run has none."""
        return self.metrics().get("cost")

    def predictions(self, split: str = "test"):
        return self.store.predictions(split)

    def evaluations(self) -> list[Evaluated]:
        """Its own test report, then every cross-dataset evaluation (read once; a new list each call)."""
        if self._evaluations is None:
            self._evaluations = self._read_evaluations()
        return list(self._evaluations)

    def _read_evaluations(self) -> list[Evaluated]:
        out = [Evaluated(self, self.dataset, "test", self.metrics()["test"], self.path / "predictions_test.csv",
                         self.protected, self.config["data"].get("fingerprint"))]
        for sub in self.store.evaluations():
            ev = json.loads((sub / "metrics.json").read_text())
            pred = sub / "predictions.csv"
            name = ev.get("dataset", sub.name)
            if name == self.dataset:  # the training dataset again (other options): not its own test
                name += " [evaluation]"
            out.append(Evaluated(self, name, ev.get("split", "test"), ev["report"],
                                 pred if pred.is_file() else None, tuple(ev.get("protected") or self.protected),
                                 (ev.get("data_fingerprint") or {}).get("digest")))
        return out


def _drop_data_seed(ident: dict[str, Any]) -> None:
    """Remove the data seed of a generated dataset (train.seed unless set) and so its fingerprint."""
    from fairbench import registry

    try:
        option = registry.datasets.get(ident["data"]["name"]).data_seed_option
    except registry.RegistryError:  # a plugin no longer installed: its records keep every key
        return
    if option is not None:
        ident["data"]["options"].pop(option, None)
        ident["data"].pop("fingerprint", None)


def load_records(runs_dir: Path) -> tuple[list[Record], list[tuple[str, str]]]:
    """Every run folder (any state); and (run, reason) for those that cannot be read."""
    from fairbench.config import RunConfig, identity_dict

    records, problems = [], []
    for rec in iter_runs(Path(runs_dir)):
        try:
            config = rec.config()
            ident = identity_dict(RunConfig.model_validate({k: v for k, v in config.items() if k != "run_id"}))
        except Exception as exc:  # an unreadable or outdated record must not hide the others
            problems.append((rec.run_id, f"unreadable config.json: {type(exc).__name__}: {exc}"))
            continue
        _drop_data_seed(ident)
        identity = flatten(ident)
        ident["train"].pop("seed", None)
        setting = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
        records.append(Record(rec.run_id, rec.path, config, rec.status(), identity, setting))
    return records, problems


def finished(records: list[Record]) -> tuple[list[Record], list[tuple[str, str]]]:
    """The finished records, and (run, reason) for the others."""
    done, skipped = [], []
    for r in records:
        if r.state == "done" and (r.path / "metrics.json").is_file():
            try:
                r.metrics()
            except (OSError, ValueError) as exc:  # a damaged record is reported, never a crash of the table
                skipped.append((r.run_id, f"unreadable metrics.json: {exc}; run its command again with --force"))
                continue
            done.append(r)
        else:
            why = r.status.get("error") or r.status.get("reason") or ("no metrics.json" if r.state == "done" else "")
            skipped.append((r.run_id, f"{r.state}" + (f": {why.splitlines()[0]}" if why else "")))
    return done, skipped
