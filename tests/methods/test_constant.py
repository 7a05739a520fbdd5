"""The constant (majority-class) control predicts the training majority for every image."""

from __future__ import annotations

import numpy as np
import torch

from fairbench import registry
from tests.kit import make_batch, make_context


def test_predicts_the_training_majority_and_learns_nothing():
    constant = registry.methods.get("constant")
    targets = np.array([0, 1, 1, 2, 1, 0])
    method = constant(make_context(targets, num_classes=3), constant.Hparams())
    before = method.predict(torch.zeros(4, 3, 8, 8)).argmax(1)
    assert before.tolist() == [1, 1, 1, 1]
    assert method.update(make_batch([0, 1, 2], targets)) == {"loss": 0.0}
    assert torch.equal(method.predict(torch.zeros(4, 3, 8, 8)).argmax(1), before)
    assert not constant.uses_train_groups and list(method.parameters()) == []


def test_ties_go_to_the_lowest_class():
    constant = registry.methods.get("constant")
    method = constant(make_context([1, 0, 1, 0], num_classes=2), constant.Hparams())
    assert method.predict(torch.zeros(1, 3, 8, 8)).argmax(1).item() == 0
