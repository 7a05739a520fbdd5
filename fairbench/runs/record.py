"""The one record of a run folder, :class:`RunRecord`: its files read back for the CLI, the runner,
every table, plot, suite report and ``compare``.

A record is its folder, read lazily and cached: the configuration (and, when read through
:func:`fairbench.runs.catalog.load_records`, the flat identity that tells settings apart and its
search trial), its status, metrics, environment, predictions, and the reports it was evaluated
with (its own test split and every cross-dataset evaluation, :class:`Evaluated`). Nothing here
imports the training code.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fairbench.runs.lease import pid_alive, running_status
from fairbench.runs.store import RunStoreError, read_json


def selected_epoch(metrics: dict[str, Any]) -> int | None:
    """The epoch a run's checkpoint was chosen at, counted from 1 as the log and the tables count
    (``metrics.json`` ``selection.selected_epoch``; records made before it stored ``epoch``, from 0)."""
    selection = metrics.get("selection") or {}
    if "selected_epoch" in selection:
        return selection["selected_epoch"]
    return None if selection.get("epoch") is None else selection["epoch"] + 1


def read_status(path: Path) -> dict[str, Any]:
    """``status.json``, with a 'running' run whose process is gone reported as 'incomplete' (and one
    whose status.json cannot be read as incomplete with ``"unreadable": True``)."""
    try:
        status = read_json(path / "status.json")
    except FileNotFoundError:
        return {"state": "incomplete", "reason": "no status.json"}
    except (json.JSONDecodeError, OSError) as exc:
        return {"state": "incomplete", "reason": f"unreadable status.json: {exc}", "unreadable": True}
    if status.get("state") == "running":
        same_host = status.get("host") == socket.gethostname()
        if same_host and not pid_alive(int(status.get("pid", -1))):
            epoch = status.get("epoch")  # 0-based in the record, 1-based in every message (as in the log)
            during = f"during epoch {epoch + 1}" if isinstance(epoch, int) else "before its first epoch"
            status = {**status, "state": "incomplete", "reason": f"process {status.get('pid')} died {during}"}
        else:  # other hosts: the run's lease and its heartbeat tell (fairbench.runs.lease)
            status = running_status(path, status)
    return status


@dataclass
class Evaluated:
    """One report of a run: its own test split, or a cross-dataset evaluation."""

    record: "RunRecord"
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
class RunRecord:
    """One run folder, finished or not. ``RunRecord(path)`` reads its files when first asked;
    ``_config`` / ``_status`` / ``_metrics`` given at construction stand in for them."""

    path: Path
    #: flat dotted keys of the hashed configuration, but a generated dataset's data seed and the
    #: fingerprint of what it drew: like train.seed, they vary across the seeds of one setting
    identity: dict[str, Any] = field(default_factory=dict)
    setting_key: str = ""  # the hashed configuration but the seed: runs that differ only in seed share it
    #: its search trial (0: the defaults) when read with the suite that ran it, else None
    trial: int | None = None
    run_id: str = ""  # the folder's name unless given
    _config: dict[str, Any] | None = field(default=None, repr=False)
    _status: dict[str, Any] | None = field(default=None, repr=False)
    _metrics: dict[str, Any] | None = field(default=None, repr=False)
    _evaluations: list[Evaluated] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.run_id = self.run_id or self.path.name

    @property
    def config(self) -> dict[str, Any]:
        """``config.json``: the resolved configuration (and its ``run_id``)."""
        if self._config is None:
            self._config = read_json(self.path / "config.json")
        return self._config

    @property
    def status(self) -> dict[str, Any]:
        """``status.json`` as :func:`read_status` reads it, when first asked."""
        if self._status is None:
            self._status = read_status(self.path)
        return self._status

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
        """"bf16" if the run trained under bf16 autocast (train.amp on a CUDA device), else "fp32";
        None when its environment.json does not say where it ran."""
        try:
            device = str(self.environment().get("device", ""))
        except (OSError, ValueError):
            return None
        return "bf16" if self.config.get("train", {}).get("amp") and device.startswith("cuda") else "fp32"

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` as stored, read once; its own OSError / ValueError when unreadable."""
        if self._metrics is None:
            self._metrics = json.loads((self.path / "metrics.json").read_text())
        return self._metrics

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``; a :class:`RunStoreError` saying what to do when it is unreadable."""
        try:
            return self.read_metrics()
        except (OSError, ValueError) as exc:
            raise RunStoreError(f"{self.path / 'metrics.json'} is unreadable ({exc}); the run must be trained again: "
                                "run its command with --force") from None

    def cost(self) -> dict[str, Any] | None:
        """The training cost block of metrics.json (fairbench.cost); None if the run has none."""
        return self.metrics().get("cost")

    def environment(self) -> dict[str, Any]:
        return read_json(self.path / "environment.json")

    def predictions(self, split: str = "test") -> pd.DataFrame:
        return pd.read_csv(self.path / f"predictions_{split}.csv")

    def evaluation_folders(self) -> list[Path]:
        """``evaluations/<folder>/`` of every cross-dataset evaluation with results."""
        folder = self.path / "evaluations"
        return sorted(p for p in folder.iterdir() if (p / "metrics.json").is_file()) if folder.is_dir() else []

    def evaluations(self) -> list[Evaluated]:
        """Its own test report, then every cross-dataset evaluation (read once; a new list each call)."""
        if self._evaluations is None:
            self._evaluations = self._read_evaluations()
        return list(self._evaluations)

    def _read_evaluations(self) -> list[Evaluated]:
        out = [Evaluated(self, self.dataset, "test", self.metrics()["test"], self.path / "predictions_test.csv",
                         self.protected, self.config["data"].get("fingerprint"))]
        for sub in self.evaluation_folders():
            ev = json.loads((sub / "metrics.json").read_text())
            pred = sub / "predictions.csv"
            name = ev.get("dataset", sub.name)
            if name == self.dataset:  # the training dataset again (other options): not its own test
                name += " [evaluation]"
            out.append(Evaluated(self, name, ev.get("split", "test"), ev["report"],
                                 pred if pred.is_file() else None, tuple(ev.get("protected") or self.protected),
                                 (ev.get("data_fingerprint") or {}).get("digest")))
        return out
