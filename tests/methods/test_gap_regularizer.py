"""Gap regulariser: the soft equalized-odds gap on a hand-computed batch, and a tiny run."""

from __future__ import annotations

import math

import pytest
import torch

from fairbench.backbones.resnet import resnet_tiny
from fairbench.methods.gap_regularizer import GapRegularizer, GapRegularizerHparams, soft_eo_gap
from tests.kit import SMALL_DATA, check_bf16_update, check_run_outputs, tiny_batch, tiny_context


def logits_for(true_prob: list[float], y: list[int]) -> torch.Tensor:
    """Two-class logits whose softmax gives probability ``true_prob[i]`` to class ``y[i]``."""
    rows = []
    for p, c in zip(true_prob, y):
        z = math.log(p / (1 - p))
        rows.append([0.0, z] if c == 1 else [z, 0.0])
    return torch.tensor(rows)


# (group, class): true-class probabilities -> cell mean
#   (0, 1): 0.9, 0.7 -> 0.8     (1, 1): 0.6 -> 0.6     (2, 1): 0.5 -> 0.5     => class 1: 0.8 - 0.5 = 0.3
#   (0, 0): 0.8      -> 0.8     (1, 0): absent         (2, 0): 0.4, 0.6 -> 0.5 => class 0: 0.8 - 0.5 = 0.3
#   group 3: absent everywhere.                                                 gap = 0.6
PROBS = [0.9, 0.7, 0.6, 0.5, 0.8, 0.4, 0.6]
YS = [1, 1, 1, 1, 0, 0, 0]
GROUPS = [0, 0, 1, 2, 0, 2, 2]


def test_gap_on_a_hand_computed_batch():
    logits = logits_for(PROBS, YS).requires_grad_(True)
    gap = soft_eo_gap(logits, torch.tensor(YS), torch.tensor(GROUPS), num_groups=4)
    assert math.isclose(float(gap.detach()), 0.6, abs_tol=1e-6)
    gap.backward()
    assert bool(torch.isfinite(logits.grad).all())  # absent cells give no NaN
    # only the extreme cells carry gradient: group 1 (class 1, the middle cell) gets none
    assert torch.equal(logits.grad[2], torch.zeros(2))


def test_a_class_seen_in_one_group_adds_nothing():
    logits = logits_for([0.9, 0.2, 0.7], [1, 0, 0])
    gap = soft_eo_gap(logits, torch.tensor([1, 0, 0]), torch.tensor([0, 1, 1]), num_groups=2)
    assert float(gap) == 0.0


def test_positive_and_true_class_scores_give_the_same_binary_gap():
    # class 0 cells: p_1 = 0.2 (group 0) and 0.5 (group 1): |0.2 - 0.5| = 0.3 on either score
    logits = logits_for([0.8, 0.5], [0, 0])
    gap = soft_eo_gap(logits, torch.tensor([0, 0]), torch.tensor([0, 1]), num_groups=2)
    assert math.isclose(float(gap), 0.3, abs_tol=1e-6)


def test_one_update_adds_lambda_times_the_gap():
    torch.manual_seed(0)
    ctx = tiny_context(num_groups=3)
    method = GapRegularizer(ctx, GapRegularizerHparams(lam=10.0))
    logs = method.update(tiny_batch(ctx))
    assert math.isclose(float(logs["loss"]), float(logs["ce"]) + 10.0 * float(logs["gap"]), rel_tol=1e-5)
    assert GapRegularizer.uses_train_groups is True
    with pytest.raises(ValueError):
        GapRegularizer(tiny_context(with_groups=False), GapRegularizerHparams())


def test_update_under_bf16_autocast():
    torch.manual_seed(0)
    ctx = tiny_context()
    ctx.make_backbone = resnet_tiny  # with batch norm
    check_bf16_update(GapRegularizer(ctx, GapRegularizerHparams()), tiny_batch(ctx, b=16))


def test_gap_regularizer_trains_one_epoch(run_tiny):
    check_run_outputs(run_tiny("gap_regularizer", sets=SMALL_DATA))
