"""Data: one module per dataset, each registering itself (``base.py`` is the contract), and what
they share: the face-set base (``face.py``), label tables to bundles (``image_table.py``) and the
decoded-image cache (``image_cache.py``)."""

from fairbench.data.base import DataSplit, Dataset, DatasetBundle, DatasetError, Task

__all__ = ["DataSplit", "Dataset", "DatasetBundle", "DatasetError", "Task"]
