"""Fair Mixup (Chuang & Mroueh 2021): the regulariser's value and gradient on a linear model
where d/dgamma is hand-computable, agreement with the authors' input-gradient form, the
choice of group pairs, and a tiny run."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from fairbench.backbones.resnet import resnet_tiny
from fairbench.methods.fair_mixup import (
    FairMixup,
    FairMixupHparams,
    MixPair,
    draw_pairs,
    leading_batch_statistics,
    mixup_penalty,
)
from tests.kit import (
    SMALL_DATA,
    TinyBackbone,
    check_bf16_update,
    check_run_outputs,
    tiny_batch,
    tiny_context,
)


def linear_model() -> nn.Linear:
    """2 inputs, 2 classes: p_1 = sigmoid(v . x + c) with v = w_1 - w_0 = (2, 0), c = b_1 - b_0 = ln 3."""
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        net.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    return net


# x_a rows 0 and 2, x_b rows 1 and 3; at gamma = 1/2 both mixes are the origin, where
# p_1 = sigmoid(ln 3) = 3/4 and d p_1 / d gamma = p_1 (1 - p_1) v . (x_a - x_b):
#   pair 1: 3/16 * (2, 0).(2, 0) = 3/4;   pair 2: 3/16 * (2, 0).(0, 2) = 0;   mean 3/8.
X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def test_regulariser_value_on_a_linear_model():
    gamma = torch.tensor(0.5, requires_grad=True)
    pairs = [MixPair(torch.tensor([0, 2]), torch.tensor([1, 3]), classes=(1,))]
    clean, penalty, (d,) = mixup_penalty(linear_model(), X, pairs, [gamma])
    assert clean.shape == (4, 2)
    assert torch.allclose(d, torch.tensor([3 / 8]))
    assert math.isclose(float(penalty.detach()), 3 / 8, rel_tol=1e-6)
    # the class-0 probability moves the other way: same absolute value
    pairs0 = [MixPair(torch.tensor([0, 2]), torch.tensor([1, 3]), classes=(0,))]
    _, penalty0, (d0,) = mixup_penalty(linear_model(), X, pairs0, [gamma])
    assert torch.allclose(d0, torch.tensor([-3 / 8]))
    assert math.isclose(float(penalty0.detach()), 3 / 8, rel_tol=1e-6)


def test_regulariser_gradient_on_a_linear_model():
    # One pair (rows 0, 1), gamma = 1/2, mix = 0, s = 3/4, R = s (1 - s) v.d with d = (2, 0):
    #   dR/dv = s (1 - s) d + s (1 - s)(1 - 2s)(v.d) mix = 3/16 (2, 0) = (3/8, 0)
    #   dR/dc = s (1 - s)(1 - 2s)(v.d) = 3/16 * (-1/2) * 4 = -3/8
    # and v = w_1 - w_0, c = b_1 - b_0.
    net = linear_model()
    gamma = torch.tensor(0.5, requires_grad=True)
    _, penalty, _ = mixup_penalty(net, X, [MixPair(torch.tensor([0]), torch.tensor([1]), (1,))], [gamma])
    assert math.isclose(float(penalty.detach()), 3 / 4, rel_tol=1e-6)
    penalty.backward()
    assert torch.allclose(net.weight.grad, torch.tensor([[-3 / 8, 0.0], [3 / 8, 0.0]]), atol=1e-6)
    assert torch.allclose(net.bias.grad, torch.tensor([3 / 8, -3 / 8]), atol=1e-6)


def test_gamma_derivative_equals_the_authors_input_gradient_form():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    net = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, 2))
    x = torch.randn(6, 3, 8, 8)
    a, b = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    gamma_value = 0.3
    _, penalty, _ = mixup_penalty(net, x, [MixPair(a, b, (1,))], [torch.tensor(gamma_value, requires_grad=True)])
    # authors (celeba/main_*.py): |mean_i <grad_x sum f, x_b - x_a>| at x = gamma x_a + (1 - gamma) x_b
    mix = (x[a] * gamma_value + x[b] * (1 - gamma_value)).requires_grad_(True)
    f = torch.softmax(net(mix), 1)[:, 1].sum()
    (gradx,) = torch.autograd.grad(f, mix)
    authors = ((gradx * (x[b] - x[a])).flatten(1).sum(1)).mean().abs()
    assert torch.allclose(penalty, authors, rtol=1e-4, atol=1e-7)


def test_batch_norm_statistics_come_from_the_clean_rows_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    clean, extra = torch.randn(6, 3, 6, 6), torch.randn(3, 3, 6, 6)
    net(clean)  # materialise the lazy layer
    reference = copy.deepcopy(net)
    expected = reference(clean)  # ordinary training-mode pass on the clean rows alone
    bn, ref_bn = net[1], reference[1]
    with leading_batch_statistics(net, len(clean)):
        out = net(torch.cat([clean, extra]))
        assert torch.allclose(bn.running_mean, ref_bn.running_mean)
        assert torch.allclose(bn.running_var, ref_bn.running_var)
        changed = net(torch.cat([clean, extra[:1], extra[1:] * 3]))
    assert torch.allclose(out[:6], expected, atol=1e-6)
    # every later row is scored on its own: changing rows 7 and 8 leaves row 6 as it was
    assert torch.allclose(changed[6], out[6], atol=1e-6) and not torch.allclose(changed[7], out[7])
    assert "forward" not in vars(bn)  # restored afterwards


GROUPS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
Y = torch.tensor([0, 1, 0, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("seed", range(5))
def test_eo_pairs_are_two_distinct_groups_within_one_class(seed):
    pairs = draw_pairs(GROUPS, Y, num_classes=2, variant="eo", generator=torch.Generator().manual_seed(seed))
    assert sorted(p.classes for p in pairs) == [(0,), (1,)]
    for p in pairs:
        (c,) = p.classes
        ga, gb = GROUPS[p.a].unique(), GROUPS[p.b].unique()
        assert len(ga) == 1 and len(gb) == 1 and ga.item() != gb.item()
        assert bool((Y[p.a] == c).all()) and bool((Y[p.b] == c).all())
        sizes = [int(((GROUPS == g) & (Y == c)).sum()) for g in (ga.item(), gb.item())]
        assert len(p.a) == len(p.b) == max(sizes)
        larger = p.a if sizes[0] >= sizes[1] else p.b  # every sample of the larger side exactly once
        assert sorted(larger.tolist()) == sorted(torch.nonzero((GROUPS == GROUPS[larger[0]]) & (Y == c))[:, 0].tolist())


def test_dp_pairs_ignore_the_class_and_skip_single_group_strata():
    pairs = draw_pairs(GROUPS, Y, num_classes=2, variant="dp", generator=torch.Generator().manual_seed(0))
    assert len(pairs) == 1 and pairs[0].classes == (1,)
    assert GROUPS[pairs[0].a].unique().item() != GROUPS[pairs[0].b].unique().item()
    assert draw_pairs(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 0, 1]), 2, "eo") == []
    three = draw_pairs(GROUPS, Y % 3, num_classes=3, variant="dp")
    assert three[0].classes == (0, 1, 2)  # no single positive class: every class probability


@pytest.mark.parametrize("hp", [{"variant": "eo"}, {"variant": "dp"}, {"variant": "dp", "groups": "hair"}])
def test_one_update_adds_lambda_times_the_penalty(hp):
    torch.manual_seed(0)
    ctx = tiny_context(num_groups=3)
    method = FairMixup(ctx, FairMixupHparams(lam=10.0, **hp))
    logs = method.update(tiny_batch(ctx))
    assert math.isclose(float(logs["loss"]), float(logs["ce"]) + 10.0 * float(logs["mixup_reg"]), rel_tol=1e-5)
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in method.parameters())


def test_unknown_pairing_attribute_is_an_error():
    with pytest.raises(ValueError, match="skin"):
        FairMixup(tiny_context(), FairMixupHparams(groups="skin"))


def test_update_under_bf16_autocast():
    torch.manual_seed(0)
    ctx = tiny_context()
    ctx.make_backbone = resnet_tiny  # with batch norm
    check_bf16_update(FairMixup(ctx, FairMixupHparams()), tiny_batch(ctx, b=16))


def test_fair_mixup_trains_one_epoch(run_tiny):
    # two steps: a double-backward step costs several plain ones on a CPU
    check_run_outputs(run_tiny("fair_mixup", sets=[*SMALL_DATA, "data.max_train_samples=64"]))
