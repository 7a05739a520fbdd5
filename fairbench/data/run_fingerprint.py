"""What identifies a run's data: the configured dataset's content fingerprint, filled into
``data.fingerprint`` before the configuration is hashed into the run id (:func:`fairbench.config.run_id`,
kept beside the configuration it hashes), and a generated dataset's data seed. Reads label files
only, decodes no image and imports no torch: a suite resolves its jobs with it.
"""

from __future__ import annotations

from typing import Any

from fairbench import registry
from fairbench.config import RunConfig
from fairbench.data.base import DatasetError, Task


def open_dataset(cfg: RunConfig):
    """The configured dataset, its options validated (nothing is read yet)."""
    dataset_cls = registry.datasets.get(cfg.data.name)
    options = dataset_cls.Options.model_validate(cfg.data.options)
    return dataset_cls(cfg.data.root, options, cfg.data.cache_dir)


def data_seed(cfg: RunConfig) -> int | None:
    """The seed a generated dataset drew this run's images from (``train.seed`` unless
    ``data.options`` set its own); None for data read from files."""
    option = registry.datasets.get(cfg.data.name).data_seed_option
    return None if option is None else cfg.data.options.get(option)


def data_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The dataset's fingerprint for this configuration (see ``Dataset.fingerprint``): checks the
    label files, decodes nothing."""
    return open_dataset(cfg).fingerprint(Task(cfg.data.target, tuple(cfg.data.protected)))


def with_fingerprint(cfg: RunConfig, fingerprint: dict[str, Any] | None = None) -> RunConfig:
    """``cfg`` with ``data.fingerprint`` filled from the data as it is now; an error if it was
    filled before (a suite's job) and the data has changed since."""
    fingerprint = fingerprint or data_fingerprint(cfg)
    if cfg.data.fingerprint is not None and cfg.data.fingerprint != fingerprint["digest"]:
        raise DatasetError(f"{cfg.data.name}: the data changed since this run was configured (fingerprint "
                           f"{cfg.data.fingerprint}, now {fingerprint['digest']}); start the command again")
    out = cfg.model_copy(deep=True)
    out.data.fingerprint = fingerprint["digest"]
    return out
