"""Domain-independent and domain-discriminative training (Wang et al. 2020) on hand-written logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairbench.methods.domain_discriminative import DomainDiscriminative, joint_labels, prior_shift_log_weights
from fairbench.methods.domain_independent import DomainIndependent, combine_heads
from tests.kit import make_batch, make_context


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# -- domain-independent ---------------------------------------------------------------------

# D = 3 heads of K = 2 logits, group-major. Head margins (z_1 - z_0): A: 10, -3, -3; B: 5, -3, -3.
HEADS = [
    [[0.0, 10.0], [3.0, 0.0], [3.0, 0.0]],  # A
    [[0.0, 5.0], [3.0, 0.0], [3.0, 0.0]],  # B
]
LOGITS = torch.tensor(HEADS).view(2, 6)


def test_domain_independent_sum_rule_adds_logits_over_heads():
    scores = combine_heads(LOGITS, 2, "sum")
    assert scores.tolist() == [[6.0, 10.0], [6.0, 5.0]]
    assert scores.argmax(1).tolist() == [1, 0]


def test_domain_independent_sum_prob_rule_averages_head_probabilities():
    expected = [[sum(softmax(h)[k] for h in heads) / 3 for k in range(2)] for heads in HEADS]
    scores = combine_heads(LOGITS, 2, "sum_prob")
    np.testing.assert_allclose(scores.softmax(1).numpy(), expected, rtol=1e-5)
    assert scores.argmax(1).tolist() == [0, 0]  # A: 0.99995 + 2 * 0.047 < 2 * 0.953


def test_domain_independent_max_rule_takes_the_most_confident_head():
    expected = [[max(softmax(h)[k] for h in heads) for k in range(2)] for heads in HEADS]
    scores = combine_heads(LOGITS, 2, "max")
    np.testing.assert_allclose(scores.exp().numpy(), expected, rtol=1e-5)
    assert scores.argmax(1).tolist() == [1, 1]  # B: 0.9933 (head 0) > 0.9526 (heads 1, 2)


def test_domain_independent_leaves_out_heads_without_training_samples():
    method = DomainIndependent(make_context([0, 1, 0], [0, 1, 1], num_groups=3), DomainIndependent.Hparams())
    assert method.trained_heads.tolist() == [True, True, False]
    assert combine_heads(LOGITS, 2, "sum", method.trained_heads).tolist() == [[3.0, 10.0], [3.0, 5.0]]
    assert method.net.head.out_features == 6


def test_domain_independent_loss_reads_only_the_samples_own_head():
    targets, groups = [1, 0], [2, 0]
    method = DomainIndependent(make_context(targets, groups, num_groups=3), DomainIndependent.Hparams())
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5, 1.0, 4.0],
                           [1.5, -0.5, 0.0, 7.0, -2.0, 3.0]], requires_grad=True)
    # sample 0: group 2 -> (1.0, 4.0), class 1; sample 1: group 0 -> (1.5, -0.5), class 0
    ce0 = math.log(math.exp(1.0) + math.exp(4.0)) - 4.0
    ce1 = math.log(math.exp(1.5) + math.exp(-0.5)) - 1.5
    loss = method.objective(logits, make_batch([0, 1], targets, groups))
    assert loss.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    loss.backward()
    grad = logits.grad.view(2, 3, 2)
    assert torch.count_nonzero(grad[0, :2]) == 0 and torch.count_nonzero(grad[0, 2]) == 2
    assert torch.count_nonzero(grad[1, 1:]) == 0 and torch.count_nonzero(grad[1, 0]) == 2


# -- domain-discriminative -----------------------------------------------------------------

# p(y, d | x) in the joint order d * K + y: (d0 y0, d0 y1, d1 y0, d1 y1)
JOINT_P = [0.02, 0.30, 0.50, 0.18]
# training counts: class 0 = 10 in group 0, 90 in group 1; class 1 = 50 and 50
TRAIN_Y = np.array([0] * 100 + [1] * 100)
TRAIN_D = np.array([0] * 10 + [1] * 90 + [0] * 50 + [1] * 50)


def dd_method(**hparams):
    return DomainDiscriminative(make_context(TRAIN_Y, TRAIN_D), DomainDiscriminative.Hparams(**hparams))


def test_domain_discriminative_joint_label_is_group_major():
    y, d = torch.tensor([1, 0, 1]), torch.tensor([1, 0, 0])
    assert joint_labels(y, d, 2).tolist() == [3, 0, 1]
    method = dd_method()
    logits = torch.zeros(3, 4)
    logits[0, 3] = math.log(3.0)  # sample 0 (joint class 3): p = 3 / 6
    batch = make_batch([0, 1, 2], [1, 0, 1], [1, 0, 0])
    expected = (-math.log(0.5) + 2 * -math.log(0.25)) / 3
    assert method.objective(logits, batch).item() == pytest.approx(expected, rel=1e-6)


def test_domain_discriminative_sums_probabilities_over_groups():
    scores = dd_method().scores(torch.tensor([JOINT_P]).log())
    np.testing.assert_allclose(scores.softmax(1).numpy(), [[0.52, 0.48]], rtol=1e-5)  # 0.02 + 0.5, 0.3 + 0.18
    assert scores.argmax(1).item() == 0


def test_domain_discriminative_prior_shift_divides_by_group_given_class():
    method = dd_method(prior_shift=True)
    # 1 / p(d | y) = N_y / N_{y,d}: class 0 -> 100/10, 100/90; class 1 -> 100/50, 100/50 (rows: groups)
    np.testing.assert_allclose(method.log_weights.exp().numpy(), [[10.0, 2.0], [10 / 9, 2.0]], rtol=1e-6)
    scores = method.scores(torch.tensor([JOINT_P]).log())
    s0, s1 = 0.02 * 10 + 0.5 * 10 / 9, 0.3 * 2 + 0.18 * 2  # 0.7556, 0.96: the decision flips to 1
    np.testing.assert_allclose(scores.softmax(1).numpy(), [[s0 / (s0 + s1), s1 / (s0 + s1)]], rtol=1e-5)
    assert scores.argmax(1).item() == 1


def test_domain_discriminative_max_rule_with_prior_shift():
    scores = dd_method(prior_shift=True, combine="max").scores(torch.tensor([JOINT_P]).log())
    np.testing.assert_allclose(scores.exp().numpy(), [[0.5 * 10 / 9, 0.3 * 2]], rtol=1e-5)


def test_prior_shift_gives_empty_cells_no_weight():
    log_w = prior_shift_log_weights(np.array([0, 0, 1]), np.array([0, 1, 0]), num_classes=2, num_groups=2)
    np.testing.assert_allclose(np.exp(log_w), [[2.0, 1.0], [2.0, 0.0]])  # cell (y=1, d=1) is empty
