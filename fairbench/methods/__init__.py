"""Training methods: one module per method, each registering itself (contract: ``base.py``)."""

from fairbench.methods.base import Batch, Hparams, Method, MethodContext, needs_label

__all__ = ["Batch", "Hparams", "Method", "MethodContext", "needs_label"]
