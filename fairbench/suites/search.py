"""Deterministic random-search trials of a suite, drawn from the declared search spaces
(:mod:`fairbench.search_spaces`).

Trial 0 is the defaults; trial k draws from a generator seeded by (search seed, method, trial), so
a trial's values do not depend on the rest of the suite.
How a suite uses it: docs/fair-comparison.md ("Search spaces live beside the hyperparameters")
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from fairbench.search_spaces import BACKBONE_LR_RATIO, TRAIN_SPACES, hparam_space


class SearchSpaceError(ValueError):
    """A search space that cannot produce a valid configuration; the message names the key."""


def trial_rng(search_seed: int, method: str, trial: int) -> np.random.Generator:
    return np.random.default_rng([search_seed, zlib.crc32(method.encode()), trial])


def _readable(value: Any) -> Any:
    """Floats to 4 significant digits: readable in listings and run folders, finer than any search needs."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def sample_trial(method: str, hparams_model: type[BaseModel], profile: str, search_seed: int,
                 trial: int) -> dict[str, dict[str, Any]]:
    """``{"hparams": {...}, "train": {...}}`` overrides for one trial; trial 0 is the defaults ({}).

    Raises :class:`SearchSpaceError` naming the key when a drawn value fails validation."""
    if trial < 0:
        raise SearchSpaceError(f"search trial must be >= 0, got {trial}")
    if trial == 0:
        return {"hparams": {}, "train": {}}
    if profile not in TRAIN_SPACES:
        raise SearchSpaceError(f"no training search space for dataset profile {profile!r}; "
                               f"known: {', '.join(TRAIN_SPACES)}")
    rng = trial_rng(search_seed, method, trial)
    # a fixed draw order (train settings, then hparams in declaration order) keeps trials stable
    train = {name: _readable(dist.sample(rng)) for name, dist in TRAIN_SPACES[profile].items()}
    train["backbone_lr"] = _readable(train["lr"] * BACKBONE_LR_RATIO[profile])
    hparams = {name: _readable(dist.sample(rng)) for name, dist in hparam_space(hparams_model).items()}
    try:
        hparams_model.model_validate(hparams)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SearchSpaceError(
            f"{method}: search space of hparams.{key} drew {hparams.get(key)!r}, which fails validation "
            f"({err['msg']}); fix the field's searched(...) distribution in the method's module") from None
    return {"hparams": hparams, "train": train}

