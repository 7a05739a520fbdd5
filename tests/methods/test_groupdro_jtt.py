"""GroupDRO's online group weights and JTT's two phases against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairbench.methods.base import needs_label
from fairbench.methods.groupdro import GroupDRO, update_group_weights
from fairbench.methods.jtt import JTT
from tests.kit import make_batch, make_context

# -- GroupDRO ------------------------------------------------------------------------------


def test_groupdro_weight_update_is_exponentiated_and_renormalised():
    # q = (1/2, 1/2), L = (0, log 3), eta = 1: q * exp(L) = (1/2, 3/2) -> (1/4, 3/4)
    q = update_group_weights(torch.tensor([0.5, 0.5]), torch.tensor([0.0, math.log(3.0)]),
                             torch.tensor([True, True]), eta=1.0)
    assert q.tolist() == pytest.approx([0.25, 0.75])


def test_groupdro_groups_absent_from_the_batch_keep_their_weight():
    # q = (1/3, 1/3, 1/3), L = (log 2, [absent], 0): (2/3, 1/3, 1/3) / (4/3) = (1/2, 1/4, 1/4)
    q = update_group_weights(torch.full((3,), 1 / 3), torch.tensor([math.log(2.0), 5.0, 0.0]),
                             torch.tensor([True, False, True]), eta=1.0)
    assert q.tolist() == pytest.approx([0.5, 0.25, 0.25])


def test_groupdro_one_step_on_cells():
    targets = [0, 0, 1, 1]  # cells y * D + d, D = 2: 0, 1, 2, 3 (all populated, q starts at 1/4)
    groups = [0, 1, 0, 1]
    method = GroupDRO(make_context(targets, groups), GroupDRO.Hparams(eta=1.0))
    assert method.q.tolist() == pytest.approx([0.25] * 4)
    batch = make_batch([0, 0, 3], targets, groups)  # cells 0, 0, 3
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    # CE: log 2, log 4 - log 3, log 2 -> L_0 = (log 2 + log(4/3)) / 2, L_3 = log 2, cells 1, 2 absent
    l0, l3 = (math.log(2.0) + math.log(4 / 3)) / 2, math.log(2.0)
    unnorm = [0.25 * math.exp(l0), 0.25, 0.25, 0.25 * math.exp(l3)]
    q = [v / sum(unnorm) for v in unnorm]
    loss, group_loss = method.objective(logits, batch)
    assert group_loss.tolist() == pytest.approx([l0, 0.0, 0.0, l3], rel=1e-6)
    assert method.q.tolist() == pytest.approx(q, rel=1e-6)
    assert loss.item() == pytest.approx(q[0] * l0 + q[3] * l3, rel=1e-6)


def test_groupdro_q_is_checkpointed():
    targets, groups = [0, 0, 1, 1], [0, 1, 0, 1]
    method = GroupDRO(make_context(targets, groups), GroupDRO.Hparams())
    method.q.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    fresh = GroupDRO(make_context(targets, groups), GroupDRO.Hparams())
    fresh.load_state_dict(method.state_dict())
    assert fresh.q.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_groupdro_empty_cells_start_at_zero_and_sampling_balances_cells():
    targets, groups = [0, 0, 0, 1], [0, 0, 1, 0]  # cells 0 (x2), 1, 2; cell 3 = (1, 1) empty
    method = GroupDRO(make_context(targets, groups, num_groups=2), GroupDRO.Hparams())
    assert method.q.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(method.begin_epoch(0, trainer=None), [1 / 6, 1 / 6, 1 / 3, 1 / 3])
    plain = GroupDRO(make_context(targets, groups, num_groups=2), GroupDRO.Hparams(balanced_sampling=False))
    assert plain.begin_epoch(0, trainer=None) is None


def test_groupdro_on_demographic_groups_only():
    targets, groups = [0, 1, 1, 1], [0, 0, 1, 1]
    method = GroupDRO(make_context(targets, groups), GroupDRO.Hparams(groups="groups", eta=1.0))
    assert method.q.tolist() == pytest.approx([0.5, 0.5])
    batch = make_batch([0, 1], targets, groups)  # both in group 0
    _, group_loss = method.objective(torch.zeros(2, 2), batch)
    assert group_loss.tolist() == pytest.approx([math.log(2.0), 0.0])
    assert method.q.tolist() == pytest.approx([2 / 3, 1 / 3])  # (1/2 * 2, 1/2) / (3/2)


def test_groupdro_generalization_adjustment_raises_small_groups_only_when_present():
    targets, groups = [0, 1, 0, 1, 0], [0, 0, 0, 0, 1]  # n_g = 4 and 1: C / sqrt(n_g) = 0.5 and 1 for C = 1
    hp = GroupDRO.Hparams(groups="groups", eta=1.0, generalization_adjustment=1.0)
    method = GroupDRO(make_context(targets, groups), hp)
    method.objective(torch.zeros(2, 2), make_batch([0, 4], targets, groups))  # both groups, CE = log 2 each
    a, b = math.exp(math.log(2.0) + 0.5), math.exp(math.log(2.0) + 1.0)
    assert method.q.tolist() == pytest.approx([a / (a + b), b / (a + b)], rel=1e-6)
    fresh = GroupDRO(make_context(targets, groups), hp)
    fresh.objective(torch.zeros(1, 2), make_batch([0], targets, groups))  # group 1 absent: keeps its weight
    assert fresh.q.tolist() == pytest.approx([a / (a + 1), 1 / (a + 1)], rel=1e-6)


def test_groupdro_declares_groups_and_worst_group_selection():
    assert GroupDRO.uses_train_groups and GroupDRO.default_selection == "worst_group_accuracy"
    assert needs_label(GroupDRO) == "T+A"


# -- JTT ------------------------------------------------------------------------------------


class FakeTrainer:
    """Returns chosen training logits and counts the calls."""

    def __init__(self, logits):
        self.logits, self.calls = np.asarray(logits, dtype=np.float32), 0

    def predict_train(self) -> np.ndarray:
        self.calls += 1
        return self.logits


TARGETS = [0, 1, 1, 0]
LOGITS = [[2.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 1.0]]  # predicts 0, 0, 1, 1: samples 1 and 3 are errors


def lrs(method):
    return [g["lr"] for opt in method.optimizers for g in opt.param_groups]


def test_jtt_identifies_errors_reinitialises_and_upweights():
    method = JTT(make_context(TARGETS, epochs=3, lr=0.1), JTT.Hparams(identification_epochs=1, upweight=5.0))
    trainer = FakeTrainer(LOGITS)
    assert method.begin_epoch(0, trainer) is None and trainer.calls == 0
    assert not method.is_selectable_epoch(0)
    first_net, first_opt = method.net, method.optimizer
    first_weight = first_net.head.weight.detach().clone()

    weights = method.begin_epoch(1, trainer)
    np.testing.assert_array_equal(weights, [1.0, 5.0, 1.0, 5.0])
    assert trainer.calls == 1 and method.is_selectable_epoch(1)
    assert method.net is not first_net and not torch.equal(method.net.head.weight, first_weight)
    assert method.optimizers == [method.optimizer] and method.optimizer is not first_opt
    new_params = {id(p) for p in method.net.parameters()}
    assert {id(p) for g in method.optimizer.param_groups for p in g["params"]} == new_params
    assert lrs(method) == pytest.approx([0.1, 0.1])  # the schedule restarts for phase 2

    np.testing.assert_array_equal(method.begin_epoch(2, trainer), [1.0, 5.0, 1.0, 5.0])
    assert trainer.calls == 1  # identified once
    assert lrs(method) == pytest.approx([0.05, 0.05])  # 0.1 / 2 * (1 + cos(pi * 1 / 2))


def test_jtt_phase_one_has_its_own_cosine_schedule():
    method = JTT(make_context(TARGETS, epochs=6, lr=0.1), JTT.Hparams(identification_epochs=2))
    method.begin_epoch(1, FakeTrainer(LOGITS))  # 0.1 / 2 * (1 + cos(pi * 1 / 2))
    assert lrs(method) == pytest.approx([0.05, 0.05])


def test_jtt_resumes_phase_two_from_its_checkpoint():
    method = JTT(make_context(TARGETS, epochs=3), JTT.Hparams(identification_epochs=1, upweight=5.0))
    method.begin_epoch(1, FakeTrainer(LOGITS))
    resumed = JTT(make_context(TARGETS, epochs=3), JTT.Hparams(identification_epochs=1, upweight=5.0))
    resumed.load_state_dict(method.state_dict())
    trainer = FakeTrainer(LOGITS)
    np.testing.assert_array_equal(resumed.begin_epoch(2, trainer), [1.0, 5.0, 1.0, 5.0])
    assert trainer.calls == 0


def test_jtt_needs_a_second_phase():
    with pytest.raises(ValueError, match="identification_epochs"):
        JTT(make_context(TARGETS, epochs=1), JTT.Hparams(identification_epochs=1))


def test_jtt_trains_on_targets_only_and_selects_on_worst_group():
    assert JTT.uses_train_groups is False
    assert JTT.default_selection == "worst_group_accuracy"
    assert needs_label(JTT) == "T, +V"
