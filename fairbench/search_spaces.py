"""Hyperparameter search spaces, declared beside each field's default (as DomainBed's
``hparams_registry``).

A method's ``Hparams`` field opts in with ``json_schema_extra=searched(LogUniform(1e-3, 1e-1))``;
other fields keep their default in every trial. The training settings every method shares have
one space per dataset profile (:data:`TRAIN_SPACES`), so every method is searched over the same
optimiser settings. Methods, tables and ``fairbench show method`` read it; a suite's trials draw
from it (:mod:`fairbench.suites.search`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from pydantic import BaseModel

from fairbench.config import PROFILES, TrainConfig


@dataclass(frozen=True)
class LogUniform:
    """exp(U(log low, log high)): for scales (learning rates, weights, step sizes)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def describe(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntUniform:
    """An integer in [low, high], both included."""

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def describe(self) -> str:
        return f"integer in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def describe(self) -> str:
        return "one of {" + ", ".join(str(v) for v in self.values) + "}"


Distribution = Union[LogUniform, Uniform, IntUniform, Choice]
_KINDS: dict[str, type] = {"log_uniform": LogUniform, "uniform": Uniform, "int_uniform": IntUniform, "choice": Choice}


def searched(distribution: Distribution) -> dict[str, Any]:
    """``json_schema_extra`` for a field searched over ``distribution`` (kept JSON-able)."""
    kind = next(k for k, cls in _KINDS.items() if isinstance(distribution, cls))
    params = {"values": list(distribution.values)} if isinstance(distribution, Choice) else {
        "low": distribution.low, "high": distribution.high}
    return {"search": {"kind": kind, **params}}


def _from_json(spec: dict[str, Any]) -> Distribution:
    cls = _KINDS[spec["kind"]]
    if cls is Choice:
        return Choice(tuple(spec["values"]))
    return cls(spec["low"], spec["high"])


def hparam_space(hparams_model: type[BaseModel]) -> dict[str, Distribution]:
    """The searched fields of a method's ``Hparams`` model, in declaration order."""
    space = {}
    for name, field in hparams_model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and "search" in extra:
            space[name] = _from_json(extra["search"])
    return space


#: Shared training settings, per dataset profile, searched for every method alike. The
#: learning rates are drawn around each profile's default (cpu-small 0.02, paper 0.002 for the
#: heads), a decade either way, and the backbone keeps the profile's ratio to the heads. Weight
#: decay reaches 1: the "strong l2 penalty" GroupDRO and JTT are tuned with (Sagawa et al. 2020:
#: 0.1 on CelebA, 1 on Waterbirds; Liu et al. 2021 search up to 1), offered to every method.
TRAIN_SPACES: dict[str, dict[str, Distribution]] = {
    "cpu-small": {
        "lr": LogUniform(0.005, 0.1),
        "weight_decay": LogUniform(1e-4, 1.0),
        "batch_size": Choice((32, 64, 128)),
    },
    "paper": {
        "lr": LogUniform(0.0005, 0.01),
        "weight_decay": LogUniform(1e-4, 1.0),
        "batch_size": Choice((8, 16, 32)),
    },
}
#: backbone_lr / lr of each profile's defaults (0.02 / 0.02 and 0.0002 / 0.002)
BACKBONE_LR_RATIO = {"cpu-small": 1.0, "paper": 0.1}


def describe_space(hparams_model: type[BaseModel], profile: str | None = None) -> list[dict[str, str]]:
    """Rows for ``fairbench show method``: every field, its default, description and search range."""
    space = hparam_space(hparams_model)
    rows = []
    for name, field in hparams_model.model_fields.items():
        rows.append({"key": f"hparams.{name}", "default": repr(field.get_default(call_default_factory=True)),
                     "search": space[name].describe() if name in space else "fixed",
                     "description": field.description or ""})
    for prof, dists in TRAIN_SPACES.items():
        if profile is not None and prof != profile:
            continue
        defaults = {**TrainConfig().model_dump(), **PROFILES[prof]["train"]}
        for name, dist in dists.items():
            rows.append({"key": f"train.{name} ({prof})", "default": repr(defaults[name]), "search": dist.describe(),
                         "description": "shared by every method"})
        rows.append({"key": f"train.backbone_lr ({prof})", "default": repr(defaults["backbone_lr"]),
                     "search": f"{BACKBONE_LR_RATIO[prof]:g} x train.lr", "description": "follows the drawn lr"})
    return rows
