"""A runs folder read as a whole: :func:`iter_runs` lists its run folders, :func:`load_records`
reads each once with the identity that tells settings apart, :func:`finished` keeps the done runs
and says why the others are left out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fairbench.runs.record import RunRecord


def iter_runs(runs_dir: Path) -> list[RunRecord]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    # hidden folders are runs being trained aside (--force) or being replaced: not results yet
    return [RunRecord(p) for p in sorted(runs_dir.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()]


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


def load_records(runs_dir: Path) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """Every run folder (any state); and (run, reason) for those that cannot be read."""
    from fairbench.config import RunConfig, identity_dict

    records, problems = [], []
    for rec in iter_runs(Path(runs_dir)):
        try:
            config = rec.config
            ident = identity_dict(RunConfig.model_validate({k: v for k, v in config.items() if k != "run_id"}))
        except Exception as exc:  # an unreadable or outdated record must not hide the others
            problems.append((rec.run_id, f"unreadable config.json: {type(exc).__name__}: {exc}"))
            continue
        _drop_data_seed(ident)
        rec.identity = flatten(ident)
        ident["train"].pop("seed", None)
        rec.setting_key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
        records.append(rec)
    return records, problems


def finished(records: list[RunRecord]) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """The finished records, and (run, reason) for the others."""
    done, skipped = [], []
    for r in records:
        if r.state == "done" and (r.path / "metrics.json").is_file():
            try:
                r.read_metrics()
            except (OSError, ValueError) as exc:  # a damaged record is reported, never a crash of the table
                skipped.append((r.run_id, f"unreadable metrics.json: {exc}; run its command again with --force"))
                continue
            done.append(r)
        else:
            why = r.status.get("error") or r.status.get("reason") or ("no metrics.json" if r.state == "done" else "")
            skipped.append((r.run_id, f"{r.state}" + (f": {why.splitlines()[0]}" if why else "")))
    return done, skipped
