"""Datasets: one module per dataset, each registering itself (see ``base.py`` for the contract)."""

from fairbench.datasets.base import DataSplit, Dataset, DatasetBundle, DatasetError, Task

__all__ = ["DataSplit", "Dataset", "DatasetBundle", "DatasetError", "Task"]
